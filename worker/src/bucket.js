// The bucket over the S3 API, signed with SigV4 (aws4fetch); every write passes the write policy.

import { AwsClient } from "aws4fetch";
import { PolicyError, StoreError, keyProblem } from "./contract.js";

const encodeKey = (key) => key.split("/").map(encodeURIComponent).join("/");

export class Bucket {
  /**
   * endpoint: "http(s)://host[:port]" (path-style addressing); writePrefixes: the only key
   * prefixes a PUT may name, each a full "a/b/" prefix.
   */
  constructor({ endpoint, bucket, region, accessKeyId, secretAccessKey, writePrefixes }) {
    this.base = `${endpoint.replace(/\/+$/, "")}/${encodeURIComponent(bucket)}`;
    this.writePrefixes = writePrefixes;
    this.client = new AwsClient({
      accessKeyId: accessKeyId || "anonymous",
      secretAccessKey: secretAccessKey || "anonymous",
      service: "s3",
      region: region || "us-east-1",
      retries: 0,
    });
  }

  async send(method, key, init = {}) {
    let response;
    try {
      response = await this.client.fetch(`${this.base}/${encodeKey(key)}`, { method, ...init });
    } catch (err) {
      throw new StoreError(`bucket unreachable: ${err.message}`);
    }
    return response;
  }

  /** The object's bytes, or null when the key does not exist. */
  async get(key) {
    const response = await this.send("GET", key);
    if (response.status === 404) {
      await response.body?.cancel();
      return null;
    }
    if (response.status !== 200) {
      await response.body?.cancel();
      throw new StoreError(`bucket error: GET ${key} answered ${response.status}`);
    }
    return new Uint8Array(await response.arrayBuffer());
  }

  /** Write bytes under a key the write policy allows; anything else is refused before sending. */
  async put(key, bytes, contentType = "application/json") {
    checkWrite(key, this.writePrefixes);
    const response = await this.send("PUT", key, {
      body: bytes,
      headers: { "content-type": contentType },
    });
    await response.body?.cancel();
    if (response.status !== 200) {
      throw new StoreError(`bucket error: PUT ${key} answered ${response.status}`);
    }
  }

  /** List at most one key under a prefix: proof that the bucket answers and signs. */
  async probe(prefix) {
    const url = `${this.base}?list-type=2&max-keys=1&prefix=${encodeURIComponent(prefix)}`;
    let response;
    try {
      response = await this.client.fetch(url);
    } catch (err) {
      throw new StoreError(`bucket unreachable: ${err.message}`);
    }
    await response.body?.cancel();
    if (response.status !== 200) {
      throw new StoreError(`bucket error: listing ${prefix} answered ${response.status}`);
    }
  }
}

/** Throw PolicyError unless `key` is a clean key under one of `prefixes`. */
export function checkWrite(key, prefixes) {
  const problem = keyProblem(key);
  if (problem) throw new PolicyError(`refused key '${key}': ${problem}`);
  if (!prefixes.some((prefix) => prefix && key.startsWith(prefix))) {
    throw new PolicyError(`refused write to '${key}': outside ${prefixes.join(", ") || "(none)"}`);
  }
}

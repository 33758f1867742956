// The contract-v1 reference sync Worker (docs/contract.md) as a Cloudflare Worker module.
// The catalog and objects are cached in the CACHE KV namespace, alerts, heartbeats and the
// rate limit live in the SyncBook Durable Object (one per root), and the sandbox-only faults and
// clock in SandboxControl. Bindings are described in worker/README.md.

import { DurableObject } from "cloudflare:workers";
import { Bucket } from "./bucket.js";
import {
  ALERT_LIMIT_BYTES,
  ALERT_RATE_PER_MIN,
  ApiError,
  CATALOG_TTL_S,
  CONTRACT_VERSION,
  CONTROL_LIMIT_BYTES,
  HEARTBEAT_LIMIT_BYTES,
  IDEMPOTENCY_RE,
  KV_MIN_TTL_S,
  KV_MISS_FAULT_PREFIX,
  MAX_CACHED_OBJECT_BYTES,
  MAX_CATALOG_TTL_S,
  MAX_CLOCK_OFFSET_S,
  NONCE_RE,
  OBJECT_TTL_S,
  PROBE_TTL_S,
  PUSH_LIMIT_BYTES,
  PolicyError,
  ROOT_HEADER,
  SHA256_RE,
  StoreError,
  TENANT_HEADER,
  TENANT_RE,
  alertCopyKey,
  applyFaultUpdate,
  catalogKey,
  catalogProblem,
  hex,
  httpDate,
  installManifest,
  isoTime,
  objectKey,
  parseAlertRows,
  parseJsonBody,
  renderStatusHtml,
  selectRoot,
  serverTiming,
  sortedJson,
  stripControls,
  summarizeStatus,
  takeToken,
  tenantStateKey,
  validateAlert,
} from "./contract.js";

const VERSION = "0.1.0";
const SLOW_ROUTE_S = 3;
// A body the no-413 mutant still bounds, so even a broken Worker cannot be made to buffer gigabytes.
const MUTANT_BODY_CAP_BYTES = 16 * 1024 * 1024;
const JITTER_FRACTION = 0.1;
const JITTER_CAP_MS = 5;
const GET = "GET,HEAD";
const POST = "POST";

// Concurrent reads of one key in this isolate that find no fresh copy share one KV read and, on
// a miss, one load, as the Python Worker's KV does: a burst on an expired catalog sends KV one
// read and the bucket one GET, not one per request. A waiter gives up on a read older than this
// and reads for itself, so a leader whose request was cancelled (its I/O with it) never strands
// the others.
const SHARED_LOAD_MAX_MS = 10_000;
const sharedLoads = new Map();
// This isolate's copy of each KV entry it last read or wrote, with the time it was stored (the
// entry's metadata) and when KV drops it: a fresh copy is a hit without a KV round trip, judged
// by the same freshness bound as the KV entry. Bounded, oldest first out.
const HOT_MAX_ENTRY_BYTES = 1024 * 1024;
const HOT_MAX_BYTES = 16 * 1024 * 1024;
const hotCopies = new Map();
let hotBytes = 0;

function hotCopy(slot) {
  const copy = hotCopies.get(slot);
  if (copy && Date.now() >= copy.expiresAt) forget(slot);
  return copy && Date.now() < copy.expiresAt ? copy : null;
}

function remember(slot, bytes, storedAt, ttlS) {
  forget(slot);
  if (bytes.byteLength > HOT_MAX_ENTRY_BYTES) return;
  const expiresAt = storedAt + Math.max(KV_MIN_TTL_S, Math.ceil(ttlS)) * 1000;
  hotCopies.set(slot, { bytes: bytes.slice(), storedAt, expiresAt });
  hotBytes += bytes.byteLength;
  for (const [oldest, copy] of hotCopies) {
    if (hotBytes <= HOT_MAX_BYTES) break;
    hotCopies.delete(oldest);
    hotBytes -= copy.bytes.byteLength;
  }
}

function forget(slot) {
  const copy = hotCopies.get(slot);
  if (copy) {
    hotCopies.delete(slot);
    hotBytes -= copy.bytes.byteLength;
  }
}

const encoder = new TextEncoder();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const truthy = (value) => ["1", "true", "yes"].includes(String(value ?? "").toLowerCase());
const list = (value) =>
  String(value ?? "")
    .split(",")
    .map((item) => item.trim())
    .filter(Boolean);

/** The Worker's settings from its bindings (vars and secrets). */
export function readConfig(env) {
  const root = env.ROOT || "snappy-os/";
  const ciRoot = env.CI_ROOT || "snappy-os-ci/";
  const ttl = Number(env.CATALOG_TTL_S ?? CATALOG_TTL_S);
  // Faults, cold-miss latency and mutants exist only in the sandbox launcher's Worker
  // (SANDBOX = "1", set by sandbox.mjs); a deployed Worker ignores them whatever its vars say.
  const sandbox = truthy(env.SANDBOX);
  let faults = {};
  try {
    faults = sandbox && env.FAULTS ? JSON.parse(env.FAULTS) : {};
  } catch {
    faults = {};
  }
  return {
    root,
    ciRoot,
    allowRootHeader: truthy(env.ALLOW_ROOT_HEADER),
    writePrefixes: env.WRITE_PREFIXES ? list(env.WRITE_PREFIXES) : [root, ciRoot],
    catalogTtlS: Number.isFinite(ttl) && ttl >= 0 && ttl <= MAX_CATALOG_TTL_S ? ttl : CATALOG_TTL_S,
    sandboxControl: sandbox && truthy(env.SANDBOX_CONTROL) && Boolean(env.CONTROL),
    faults,
    colos: list(env.COLOS),
    kvMissMs: sandbox ? Number(env.KV_MISS_MS ?? 0) || 0 : 0,
    mutant: sandbox ? env.MUTANT || "" : "",
    mutantRegion: truthy(env.MUTANT_REGION),
    version: env.VERSION || VERSION,
  };
}

// --- one request --------------------------------------------------------------------------

class Call {
  constructor(request, env, config, control) {
    this.request = request;
    this.env = env;
    this.config = config;
    this.faults = control.faults;
    this.offsetS = control.offsetS;
    this.colo = env.COLO || request.cf?.colo || "XXX";
    this.root = config.root;
    this.cache = null;
    this.timing = { kvMs: null, bucketMs: 0, bucketUsed: false, faultMs: 0 };
    this.bucket = new Bucket({
      endpoint: env.STORE_ENDPOINT,
      bucket: env.BUCKET,
      region: env.STORE_REGION,
      accessKeyId: env.STORE_ACCESS_KEY_ID,
      secretAccessKey: env.STORE_SECRET_ACCESS_KEY,
      writePrefixes: config.writePrefixes,
    });
  }

  get mutant() {
    return this.config.mutant;
  }

  /** The Worker's notion of now, in seconds (wall clock plus the sandbox clock offset). */
  now() {
    return Date.now() / 1000 + this.offsetS;
  }

  book() {
    return this.env.BOOK.get(this.env.BOOK.idFromName(this.root));
  }

  missMs() {
    return this.faults[KV_MISS_FAULT_PREFIX + this.colo] ?? this.config.kvMissMs;
  }

  /** One bucket operation, with any injected bucket latency, timed into server-timing. */
  async store(operation) {
    const started = Date.now();
    this.timing.bucketUsed = true;
    try {
      const extra = this.faults.bucket_latency_ms ?? 0;
      if (extra) await sleep(extra);
      return await operation(this.bucket);
    } finally {
      this.timing.bucketMs += Date.now() - started;
    }
  }

  /**
   * Read `key` through this region's KV: a hit when a fresh entry is there, else a cold miss
   * (the region's miss latency) and `load()`, whose {bytes, cache} is stored when cache is true.
   */
  async kvRead(key, load, { ttlS, freshForS = Infinity }) {
    const started = Date.now();
    const bucketBefore = this.timing.bucketMs;
    const slot = `${this.colo}\u0000${key}`;
    const fresh = (storedAt) => Date.now() - storedAt < freshForS * 1000;
    const copy = hotCopy(slot);
    const read =
      copy && fresh(copy.storedAt)
        ? { bytes: copy.bytes.slice(), hit: true }
        : await this.sharedRead(slot, () => this.readThrough(slot, key, load, ttlS, fresh));
    const spent = Date.now() - started - (this.timing.bucketMs - bucketBefore);
    this.timing.kvMs = Math.max(0, spent);
    this.cache = read.hit ? "hit" : "miss";
    return { value: read.bytes, hit: read.hit, kvMs: Math.max(0, Date.now() - started) };
  }

  /** KV, then on a miss the region's miss latency, `load()` and the KV write of what it keeps. */
  async readThrough(slot, key, load, ttlS, fresh) {
    const found = await this.env.CACHE.getWithMetadata(key, "arrayBuffer");
    const storedAt = found.metadata?.t ?? 0;
    if (found.value !== null && fresh(storedAt)) {
      const bytes = new Uint8Array(found.value);
      remember(slot, bytes, storedAt, ttlS);
      return { bytes, hit: true, stored: null };
    }
    const missMs = this.missMs();
    if (missMs > 0) {
      await sleep(missMs + Math.random() * Math.min(JITTER_CAP_MS, missMs * JITTER_FRACTION));
    }
    const loaded = await load();
    if (loaded === null) return { bytes: null, hit: false, stored: null };
    if (!loaded.cache) return { bytes: loaded.bytes, hit: false, stored: null };
    const now = Date.now();
    remember(slot, loaded.bytes, now, ttlS);
    const stored = this.env.CACHE.put(key, loaded.bytes, {
      expirationTtl: Math.max(KV_MIN_TTL_S, Math.ceil(ttlS)),
      metadata: { t: now },
    });
    return { bytes: loaded.bytes, hit: false, stored };
  }

  /**
   * Run `readThrough` once for concurrent reads of one slot that found no fresh copy. Waiters get
   * their own copy of the bytes as soon as they are read; the request that read them from the
   * bucket answers once KV has them.
   */
  async sharedRead(slot, readThrough) {
    const running = sharedLoads.get(slot);
    if (running && Date.now() - running.at < SHARED_LOAD_MAX_MS) {
      const givenUp = sleep(SHARED_LOAD_MAX_MS).then(() => ({ givenUp: true }));
      const first = await Promise.race([running.promise, givenUp]);
      if (!first.givenUp) return { bytes: first.bytes?.slice() ?? null, hit: first.hit };
    }
    const shared = { at: Date.now(), promise: readThrough() };
    sharedLoads.set(slot, shared);
    let read;
    try {
      read = await shared.promise;
    } finally {
      if (sharedLoads.get(slot) === shared) sharedLoads.delete(slot);
    }
    await read.stored;
    return read;
  }
}

// --- authentication -----------------------------------------------------------------------

const hmacKeys = new Map();

async function hmacKey(secret) {
  let key = hmacKeys.get(secret);
  if (!key) {
    key = await crypto.subtle.importKey(
      "raw",
      encoder.encode(secret),
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["sign", "verify"],
    );
    hmacKeys.clear();
    hmacKeys.set(secret, key);
  }
  return key;
}

function bearer(request) {
  const header = request.headers.get("authorization") ?? "";
  const space = header.indexOf(" ");
  const scheme = space < 0 ? header : header.slice(0, space);
  const token = space < 0 ? "" : header.slice(space + 1).trim();
  return { scheme: scheme.toLowerCase(), token };
}

function hexBytes(text) {
  const bytes = new Uint8Array(text.length / 2);
  for (let i = 0; i < bytes.length; i += 1) bytes[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return bytes;
}

/** Compare two byte strings in constant time (for equal lengths, as digests are). */
function timingSafeEqual(a, b) {
  if (a.byteLength !== b.byteLength) return false;
  if (crypto.subtle.timingSafeEqual) return crypto.subtle.timingSafeEqual(a, b);
  let diff = 0;
  for (let i = 0; i < a.byteLength; i += 1) diff |= a[i] ^ b[i];
  return diff === 0;
}

/** The tenant proven by x-sync-tenant and its bearer token hex(HMAC-SHA256(secret, id)). */
async function authenticateTenant(call, { bypass = false } = {}) {
  const tenant = call.request.headers.get(TENANT_HEADER) ?? "";
  const { scheme, token } = bearer(call.request);
  const challenge = { "www-authenticate": 'Bearer realm="sync-ci tenant"' };
  if (!tenant || scheme !== "bearer" || !token) {
    throw new ApiError(
      401,
      `tenant auth required: ${TENANT_HEADER} and authorization: Bearer <token>`,
      challenge,
    );
  }
  if (bypass && TENANT_RE.test(tenant)) return tenant;
  const secret = call.env.TENANT_SECRET ?? "";
  // crypto.subtle.verify recomputes the HMAC and compares it in constant time.
  const valid =
    Boolean(secret) &&
    TENANT_RE.test(tenant) &&
    SHA256_RE.test(token) &&
    (await crypto.subtle.verify(
      "HMAC",
      await hmacKey(secret),
      hexBytes(token),
      encoder.encode(tenant),
    ));
  if (!valid) throw new ApiError(401, "invalid tenant id or token", challenge);
  return tenant;
}

/** Throw 401 unless the request carries the admin bearer token. */
async function authenticateAdmin(call) {
  const expected = call.env.ADMIN_TOKEN ?? "";
  const { scheme, token } = bearer(call.request);
  const digest = async (text) =>
    new Uint8Array(await crypto.subtle.digest("SHA-256", encoder.encode(text)));
  const ok =
    Boolean(expected) &&
    scheme === "bearer" &&
    timingSafeEqual(await digest(token), await digest(expected));
  if (!ok) {
    throw new ApiError(401, "admin token required", {
      "www-authenticate": 'Bearer realm="sync-ci admin"',
    });
  }
}

// --- bodies -------------------------------------------------------------------------------

/** Read a request body of at most `limit` bytes, refusing more (413) before buffering it all. */
async function readLimited(request, limit) {
  const tooBig = () => new ApiError(413, `body larger than ${limit} bytes`);
  const declared = request.headers.get("content-length");
  if (declared !== null && Number(declared) > limit) throw tooBig();
  if (!request.body) return new Uint8Array(0);
  const reader = request.body.getReader();
  const chunks = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > limit) {
      await reader.cancel();
      throw tooBig();
    }
    chunks.push(value);
  }
  const body = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    body.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return body;
}

function checkBodyTenant(document, tenant) {
  if (Object.hasOwn(document, "tenant") && document.tenant !== tenant) {
    const named =
      typeof document.tenant === "string" ? `'${document.tenant}'` : JSON.stringify(document.tenant);
    throw new ApiError(403, `body tenant ${named} is not the authenticated tenant`);
  }
}

const isObject = (value) => value !== null && typeof value === "object" && !Array.isArray(value);

// --- responses ----------------------------------------------------------------------------

function json(document, status = 200, headers = {}) {
  return new Response(JSON.stringify(document), {
    status,
    headers: { "content-type": "application/json; charset=utf-8", ...headers },
  });
}

function errorResponse(status, message, headers = {}) {
  return json({ error: message, code: status }, status, headers);
}

// --- handlers -----------------------------------------------------------------------------

async function handleHealth(call) {
  return json({
    ok: true,
    version: call.config.version,
    root: call.root,
    contract: CONTRACT_VERSION,
    colo: call.colo,
    catalog_ttl_s: call.config.catalogTtlS,
  });
}

/** The root's catalog (parsed) and its stored bytes, through this region's KV (404, 502). */
async function readCatalog(call) {
  if (call.mutant === "region-500" && call.config.mutantRegion) {
    throw new ApiError(500, "internal error");
  }
  const key = catalogKey(call.root);
  call.cache = "miss";
  const load = async () => {
    const bytes = await call.store((bucket) => bucket.get(key));
    if (bytes === null) return null;
    const problem = catalogProblem(parseCatalogBytes(bytes, key), key);
    if (problem) throw new ApiError(502, `malformed catalog: ${problem}`);
    return { bytes, cache: true };
  };
  // The stale-catalog mutant keeps what it cached for ever.
  const freshForS = call.mutant === "stale-catalog" ? Infinity : call.config.catalogTtlS;
  const read = await call.kvRead(`${call.root}catalog`, load, {
    ttlS: call.config.catalogTtlS,
    freshForS,
  });
  if (read.value === null) throw new ApiError(404, `no catalog at ${key}`);
  return { catalog: parseCatalogBytes(read.value, key), bytes: read.value };
}

function parseCatalogBytes(bytes, key) {
  try {
    return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (err) {
    throw new ApiError(502, `malformed catalog: ${key} is not valid JSON: ${err.message}`);
  }
}

async function handleCatalog(call) {
  const { bytes } = await readCatalog(call);
  return new Response(bytes, { headers: { "content-type": "application/json; charset=utf-8" } });
}

async function handleInstall(call) {
  if (call.mutant === "slow-install") await sleep(SLOW_ROUTE_S * 1000);
  const document = installManifest((await readCatalog(call)).catalog);
  const names = Object.keys(document.entries).sort();
  if (call.mutant === "missing-install-entry" && names.length) delete document.entries[names[0]];
  if (call.mutant === "error-body-200") {
    return json({ error: "catalog temporarily unavailable", code: 500 });
  }
  return json(document);
}

async function handleObject(call, name) {
  if (!SHA256_RE.test(name)) {
    throw new ApiError(400, "object name must be 64 lowercase hex digits (its sha256)");
  }
  const key = objectKey(call.root, name);
  call.cache = "miss";
  const load = async () => {
    const bytes = await call.store((bucket) => bucket.get(key));
    if (bytes === null) return null;
    const digest = hex(await crypto.subtle.digest("SHA-256", bytes));
    if (digest !== name) {
      throw new ApiError(502, `corrupt object: ${key} holds bytes whose sha256 is ${digest}`);
    }
    return { bytes, cache: bytes.byteLength <= MAX_CACHED_OBJECT_BYTES };
  };
  const read = await call.kvRead(`${call.root}o/${name}`, load, { ttlS: OBJECT_TTL_S });
  if (read.value === null) throw new ApiError(404, `no object ${name}`);
  let body = read.value;
  if (call.mutant === "corrupt-object") {
    body = body.byteLength ? Uint8Array.from(body) : new Uint8Array(1);
    if (read.value.byteLength) body[0] ^= 0xff;
  }
  return new Response(body, {
    headers: {
      "content-type": "application/octet-stream",
      etag: `"${name}"`,
      "cache-control": "public, max-age=31536000, immutable",
    },
  });
}

async function handleProbe(call, nonce) {
  if (!NONCE_RE.test(nonce)) {
    throw new ApiError(400, "nonce must be 8-128 characters of A-Z, a-z, 0-9, '_' or '-'");
  }
  const load = async () => ({ bytes: encoder.encode("1"), cache: true });
  const read = await call.kvRead(`${call.root}_probe/${nonce}`, load, { ttlS: PROBE_TTL_S });
  return json({
    nonce,
    colo: call.colo,
    cache: read.hit ? "hit" : "miss",
    kv_ms: Math.round(read.kvMs * 1000) / 1000,
  });
}

async function handlePush(call) {
  const mutant = call.mutant;
  let tenant = await authenticateTenant(call, { bypass: mutant === "push-auth-bypass" });
  const limit = mutant === "no-413" ? MUTANT_BODY_CAP_BYTES : PUSH_LIMIT_BYTES;
  const body = await readLimited(call.request, limit);
  const document = parseJsonBody(body, "push body");
  if (!isObject(document)) throw new ApiError(400, "push body must be a JSON object");
  if (
    mutant === "cross-tenant-push" &&
    typeof document.tenant === "string" &&
    TENANT_RE.test(document.tenant)
  ) {
    tenant = document.tenant;
  }
  checkBodyTenant(document, tenant);
  const key = tenantStateKey(call.root, tenant);
  if (mutant !== "push-no-write") await call.store((bucket) => bucket.put(key, body));
  const sha256 = hex(await crypto.subtle.digest("SHA-256", body));
  return json({ key, sha256 }, 201);
}

async function handleAlert(call) {
  const tenant = await authenticateTenant(call);
  const body = await readLimited(call.request, ALERT_LIMIT_BYTES);
  let document = parseJsonBody(body, "alert body");
  if (call.mutant === "alert-controls") document = stripControls(document);
  const alert = validateAlert(document);
  const rows = parseAlertRows(document.rows);
  const idem = alert.idempotency_key;
  if (!IDEMPOTENCY_RE.test(idem)) {
    throw new ApiError(
      400,
      "idempotency_key must be 1-128 characters of A-Z, a-z, 0-9, '_', '.', ':', '-'",
    );
  }
  checkBodyTenant(document, tenant);
  const nowS = call.now();
  const book = call.book();
  const outcome = await book.alert({
    tenant,
    alert,
    rows,
    nowS,
    dedup: call.mutant !== "alert-no-dedup",
  });
  if (outcome.repeat) return json({ stored: false, idempotency_key: idem }, 200);
  if (outcome.waitS > 0) {
    throw new ApiError(429, `tenant ${tenant} sent more than ${ALERT_RATE_PER_MIN} alerts a minute`, {
      "retry-after": String(Math.max(1, Math.ceil(outcome.waitS))),
    });
  }
  const record = { ...alert, tenant, received_at: isoTime(nowS), rows };
  const key = alertCopyKey(call.root, tenant, idem);
  try {
    await call.store((bucket) => bucket.put(key, encoder.encode(sortedJson(record))));
  } catch (err) {
    // Best effort: the alert is already counted; a failed copy must not turn into a retry storm.
    await book.persistFailed();
    console.error(`sync-ci worker: could not persist alert ${key}: ${err.message}`);
  }
  return json({ stored: true, idempotency_key: idem }, 202);
}

async function handleHeartbeat(call) {
  const tenant = await authenticateTenant(call);
  await readLimited(call.request, HEARTBEAT_LIMIT_BYTES);
  await call.book().heartbeat(tenant, call.now());
  return new Response(null, { status: 204 });
}

async function handleStatus(call) {
  if (call.mutant !== "status-open") await authenticateAdmin(call);
  const summary = { root: call.root, ...(await call.book().status(call.now())) };
  if ((call.request.headers.get("accept") ?? "").includes("text/html")) {
    return new Response(renderStatusHtml(summary), {
      headers: { "content-type": "text/html; charset=utf-8" },
    });
  }
  return json(summary);
}

function control(call) {
  return call.env.CONTROL.get(call.env.CONTROL.idFromName("control"));
}

// Sandbox only: a region reads the shared faults and clock from SandboxControl at most once per
// CONTROL_REUSE_MS, not once per request (a burst's 1,000 requests would queue on that one
// object); a control POST answers only after CONTROL_SETTLE_MS, by when every region's copy is
// newer than the change, so a run-time fault holds everywhere once `sandbox-fault` returns.
const CONTROL_REUSE_MS = 200;
const CONTROL_SETTLE_MS = 250;
let controlCopy = null;

async function controlState(env, { reuse = true } = {}) {
  if (!reuse || !controlCopy || Date.now() - controlCopy.at >= CONTROL_REUSE_MS) {
    // Stamped before the read: a copy read before a change is older than the change.
    const at = Date.now();
    const state = await env.CONTROL.get(env.CONTROL.idFromName("control")).state();
    controlCopy = { at, state };
  }
  return controlCopy.state;
}

/** After a control change: this region reads the new state now; the others' copies expire. */
async function settleControl(env) {
  await controlState(env, { reuse: false });
  await sleep(CONTROL_SETTLE_MS);
}

async function handleFaults(call) {
  await authenticateAdmin(call);
  if (call.request.method === "POST") {
    const update = parseJsonBody(
      await readLimited(call.request, CONTROL_LIMIT_BYTES),
      "fault update",
    );
    const answer = await control(call).setFaults(update, call.config.colos);
    if (answer.error) throw new ApiError(400, answer.error);
    await settleControl(call.env);
    return json({ faults: answer.faults });
  }
  return json({ faults: call.faults });
}

async function handleClock(call) {
  await authenticateAdmin(call);
  let offsetS = call.offsetS;
  if (call.request.method === "POST") {
    const document = parseJsonBody(
      await readLimited(call.request, CONTROL_LIMIT_BYTES),
      "clock body",
    );
    const offset = isObject(document) ? document.offset_s : undefined;
    if (typeof offset !== "number" || !Number.isFinite(offset) || Math.abs(offset) > MAX_CLOCK_OFFSET_S) {
      throw new ApiError(
        400,
        `clock body must be {"offset_s": N} with |N| <= ${MAX_CLOCK_OFFSET_S}`,
      );
    }
    offsetS = await control(call).setClock(offset);
    call.offsetS = offsetS;
    await settleControl(call.env);
  }
  return json({ offset_s: offsetS, now: isoTime(call.now()) });
}

// --- routing ------------------------------------------------------------------------------

const EXACT = {
  "/_health": [GET, handleHealth],
  "/catalog": [GET, handleCatalog],
  "/install": [GET, handleInstall],
  "/_push": [POST, handlePush],
  "/_alert": [POST, handleAlert],
  "/_heartbeat": [POST, handleHeartbeat],
  "/_status": [GET, handleStatus],
};
const CONTROL = {
  "/_sandbox/faults": ["GET,HEAD,POST", handleFaults],
  "/_sandbox/clock": ["GET,HEAD,POST", handleClock],
};
const PATTERNS = [
  [/^\/o\/([^/]+)$/, GET, handleObject],
  [/^\/_probe\/kv\/([^/]+)$/, GET, handleProbe],
];

/** The handler for a request, or ApiError 404 / 405 (with an allow header). */
function route(call, path) {
  let found = EXACT[path] ?? (call.config.sandboxControl ? CONTROL[path] : undefined);
  let arg;
  if (!found) {
    for (const [pattern, allow, handler] of PATTERNS) {
      const match = pattern.exec(path);
      if (match) {
        found = [allow, handler];
        arg = decodeURIComponent(match[1]);
        break;
      }
    }
  }
  if (!found) throw new ApiError(404, `no such endpoint: ${path}`);
  const [allow, handler] = found;
  if (!allow.split(",").includes(call.request.method)) {
    throw new ApiError(405, `method ${call.request.method} is not allowed on ${path}`, { allow });
  }
  return () => handler(call, arg);
}

async function serve(request, env) {
  const started = Date.now();
  const config = readConfig(env);
  const state = config.sandboxControl
    ? await controlState(env)
    : { faults: config.faults, offsetS: 0 };
  const call = new Call(request, env, config, state);
  const path = new URL(request.url).pathname;
  const exempt = path === "/_health" || path.startsWith("/_sandbox/");
  let response;
  try {
    if (!exempt) {
      const latency = call.faults.latency_ms ?? 0;
      if (latency) {
        await sleep(latency);
        call.timing.faultMs = latency;
      }
      const rate = call.faults["5xx_rate"] ?? 0;
      if (rate && Math.random() < rate) throw new ApiError(503, "injected fault: 5xx_rate");
    }
    if (call.mutant === "region-down" && config.mutantRegion) {
      throw new ApiError(503, "region unavailable");
    }
    const handler = route(call, path);
    call.root = selectRoot(request.headers.get(ROOT_HEADER), config);
    response = await handler();
  } catch (err) {
    if (err instanceof ApiError) response = errorResponse(err.status, err.message, err.headers);
    else if (err instanceof PolicyError) {
      response = errorResponse(403, `refused by the Worker's write policy: ${err.message}`);
    } else if (err instanceof StoreError) response = errorResponse(502, err.message);
    else {
      console.error(`sync-ci worker: internal error on ${request.method} ${path}: ${err.stack}`);
      response = errorResponse(500, "internal error");
    }
  }
  const headers = response.headers;
  const ray = hex(crypto.getRandomValues(new Uint8Array(8)));
  if (call.mutant === "bad-cf-ray") headers.set("cf-ray", ray);
  else if (call.mutant !== "no-cf-ray") headers.set("cf-ray", `${ray}-${call.colo}`);
  // The Date header follows the Worker's clock, so /_sandbox/clock can simulate skew.
  if (call.mutant !== "no-date") headers.set("date", httpDate(call.now()));
  else headers.delete("date");
  if (call.cache !== null) {
    headers.set("x-cache", call.mutant === "x-cache-always-hit" ? "hit" : call.cache);
  }
  headers.set("server-timing", serverTiming(call.timing, Date.now() - started));
  return response;
}

export default {
  async fetch(request, env) {
    return serve(request, env);
  },
};

// --- Durable Objects ----------------------------------------------------------------------

/** Alerts, heartbeats, idempotency keys and the alert rate limit of one root. */
export class SyncBook extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    this.book = { checks: {}, heartbeats: {}, persistFailures: 0, rate: {} };
    ctx.blockConcurrencyWhile(async () => {
      this.book = (await ctx.storage.get("book")) ?? this.book;
    });
  }

  async save() {
    await this.ctx.storage.put("book", this.book);
  }

  /** Count an alert once per idempotency key; {repeat} for a known key, {waitS} when limited. */
  async alert({ tenant, alert, rows, nowS, dedup }) {
    const seenKey = `seen\u0000${tenant}\u0000${alert.idempotency_key}`;
    if (dedup && (await this.ctx.storage.get(seenKey))) return { repeat: true };
    const [bucket, waitS] = takeToken(
      this.book.rate[tenant] ?? { tokens: 30, updatedAt: Date.now() / 1000 },
      Date.now() / 1000,
    );
    this.book.rate[tenant] = bucket;
    if (waitS > 0) {
      await this.save();
      return { waitS };
    }
    const stats = (this.book.checks[alert.check] ??= {
      count: 0,
      tenants: [],
      first_seen: nowS,
      last_seen: nowS,
      last_message: "",
      last_tenant: "",
      last_rows: [],
    });
    stats.count += 1;
    if (!stats.tenants.includes(tenant)) stats.tenants.push(tenant);
    stats.last_seen = nowS;
    stats.last_message = alert.message;
    stats.last_tenant = tenant;
    stats.last_rows = rows;
    await this.ctx.storage.put(seenKey, 1);
    await this.save();
    return { stored: true };
  }

  async persistFailed() {
    this.book.persistFailures += 1;
    await this.save();
  }

  async heartbeat(tenant, nowS) {
    this.book.heartbeats[tenant] = nowS;
    await this.save();
  }

  async status(nowS) {
    return {
      ...summarizeStatus(this.book.checks, this.book.heartbeats, nowS),
      persist_failures: this.book.persistFailures,
    };
  }
}

/** Sandbox only: the faults and clock offset every region and root shares. */
export class SandboxControl extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    this.faults = readConfig(env).faults;
    this.offsetS = 0;
  }

  async state() {
    return { faults: this.faults, offsetS: this.offsetS };
  }

  async setFaults(update, colos) {
    try {
      this.faults = applyFaultUpdate(this.faults, update, colos);
    } catch (err) {
      return { error: err.message };
    }
    return { faults: this.faults };
  }

  async setClock(offsetS) {
    this.offsetS = offsetS;
    return this.offsetS;
  }
}

#!/usr/bin/env node
// Serve a Worker on workerd (through miniflare): one loopback listener per region, each region
// with its own KV namespaces, all sharing the Durable Objects; write a ready file once serving.
//
// Usage: node sandbox.mjs --ready-file PATH [--host 127.0.0.1] [--regions SJC,IAD,FRA,SIN,GRU]
//   [--kv-miss-ms SJC=30,...] [--fault KEY=VALUE ...] [--root snappy-os/] [--ci-root snappy-os-ci/]
//   [--write-prefix PREFIX ...] [--allow-root-header] [--sandbox-control] [--catalog-ttl-s 3]
//   [--mutant NAME] [--project FILE.json]
// The options are those of `python -m sync_ci.sandbox.worker_main`, and so is the environment:
// SYNC_CI_WORKER_STORE_ENDPOINT, _BUCKET, _ACCESS_KEY_ID, _SECRET_ACCESS_KEY, _TENANT_SECRET,
// _ADMIN_TOKEN, _STORE_REGION. Secrets reach the Worker as secret bindings, never through argv.

import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const DEFAULT_REGIONS = ["SJC", "IAD", "FRA", "SIN", "GRU"];
const DEFAULT_MISS_MS = { SJC: 30, IAD: 40, FRA: 60, SIN: 90, GRU: 120 };
const FALLBACK_MISS_MS = 50;
const MAX_MISS_MS = 60000;
const MAX_REGIONS = 16;
const MAX_CATALOG_TTL_S = 60;
const ENV_PREFIX = "SYNC_CI_WORKER_";
const REQUIRED_ENV = ["STORE_ENDPOINT", "BUCKET", "TENANT_SECRET", "ADMIN_TOKEN"];
// The reference Worker as a project: what worker/wrangler.toml says (a test keeps them equal).
export const REFERENCE_PROJECT = {
  name: "sync-ci-reference-worker",
  main: join(HERE, "src", "index.js"),
  compatibility_date: "2025-04-01",
  compatibility_flags: [],
  kv_namespaces: ["CACHE"],
  durable_objects: [{ name: "BOOK", class_name: "SyncBook" }],
  vars: {},
  // Sandbox only, never in wrangler.toml: the faults and clock behind /_sandbox/*.
  sandbox_control: { name: "CONTROL", class_name: "SandboxControl" },
};

class UsageError extends Error {}

function fail(message, code) {
  process.stderr.write(`sync-ci: error: worker: ${message}\n`);
  process.exit(code);
}

/** Parse argv into options; throw UsageError naming what is wrong. */
export function parseArgs(argv) {
  const options = {
    readyFile: "",
    host: "127.0.0.1",
    regions: DEFAULT_REGIONS.join(","),
    kvMissMs: "",
    faults: [],
    root: "snappy-os/",
    ciRoot: "snappy-os-ci/",
    writePrefixes: [],
    allowRootHeader: false,
    sandboxControl: false,
    catalogTtlS: 3,
    mutant: "",
    project: "",
  };
  const valued = {
    "--ready-file": "readyFile",
    "--host": "host",
    "--regions": "regions",
    "--kv-miss-ms": "kvMissMs",
    "--root": "root",
    "--ci-root": "ciRoot",
    "--catalog-ttl-s": "catalogTtlS",
    "--mutant": "mutant",
    "--project": "project",
  };
  const repeated = { "--fault": "faults", "--write-prefix": "writePrefixes" };
  for (let i = 0; i < argv.length; i += 1) {
    let [flag, value] = argv[i].includes("=") && argv[i].startsWith("--")
      ? [argv[i].slice(0, argv[i].indexOf("=")), argv[i].slice(argv[i].indexOf("=") + 1)]
      : [argv[i], undefined];
    if (flag === "--allow-root-header") options.allowRootHeader = true;
    else if (flag === "--sandbox-control") options.sandboxControl = true;
    else if (flag in valued || flag in repeated) {
      if (value === undefined) {
        i += 1;
        if (i >= argv.length) throw new UsageError(`${flag} needs a value`);
        value = argv[i];
      }
      if (flag in valued) options[valued[flag]] = value;
      else options[repeated[flag]].push(value);
    } else throw new UsageError(`unknown option ${flag}; see the usage at the top of ${HERE}/sandbox.mjs`);
  }
  if (!options.readyFile) throw new UsageError("--ready-file PATH is required");
  return options;
}

function isLoopback(host) {
  return host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

function checkPrefix(flag, value, keyProblem) {
  const problem = keyProblem(value);
  if (problem || !value.endsWith("/")) {
    throw new UsageError(`${flag} '${value}': ${problem || "must end with '/'"}`);
  }
  return value;
}

/** Validate options against the contract's ranges; return what the regions are built from. */
export async function validate(options) {
  const { keyProblem, parseFaultValue } = await import("./src/contract.js");
  const { MUTANTS } = await import("./src/mutants.js");
  if (!isLoopback(options.host)) {
    throw new UsageError(`--host '${options.host}': the Worker listens on loopback addresses only`);
  }
  if (options.mutant && !MUTANTS.includes(options.mutant)) {
    throw new UsageError(`--mutant '${options.mutant}' is not one of: ${MUTANTS.join(", ")}`);
  }
  const colos = options.regions
    .split(",")
    .map((c) => c.trim().toUpperCase())
    .filter(Boolean);
  if (!colos.length || colos.some((c) => !/^[A-Z]{3}$/.test(c)) || new Set(colos).size !== colos.length || colos.length > MAX_REGIONS) {
    throw new UsageError(
      `--regions '${options.regions}': give 1-${MAX_REGIONS} unique three-letter colo codes like SJC,IAD`,
    );
  }
  const missMs = Object.fromEntries(colos.map((c) => [c, DEFAULT_MISS_MS[c] ?? FALLBACK_MISS_MS]));
  for (const part of options.kvMissMs.split(",").map((p) => p.trim()).filter(Boolean)) {
    const [colo, value] = part.split("=", 2).map((s) => s?.trim());
    const number = value === undefined || value === "" ? NaN : Number(value);
    if (!(colo.toUpperCase() in missMs) || !(number >= 0 && number <= MAX_MISS_MS)) {
      throw new UsageError(
        `--kv-miss-ms '${part}': want COLO=MS with COLO one of ${colos.join(",")} and MS in 0..${MAX_MISS_MS}`,
      );
    }
    missMs[colo.toUpperCase()] = number;
  }
  const faults = {};
  for (const item of options.faults) {
    const at = item.indexOf("=");
    if (at < 0) throw new UsageError(`fault '${item}' is not KEY=VALUE (e.g. 5xx_rate=0.1)`);
    const key = item.slice(0, at).trim();
    try {
      faults[key] = parseFaultValue(key, item.slice(at + 1).trim(), colos);
    } catch (err) {
      throw new UsageError(err.message);
    }
  }
  const root = checkPrefix("--root", options.root, keyProblem);
  const ciRoot = checkPrefix("--ci-root", options.ciRoot, keyProblem);
  const writePrefixes = options.writePrefixes.length
    ? options.writePrefixes.map((p) => checkPrefix("--write-prefix", p, keyProblem))
    : [root, ciRoot];
  const ttl = Number(options.catalogTtlS);
  if (!(ttl >= 0 && ttl <= MAX_CATALOG_TTL_S)) {
    throw new UsageError(`--catalog-ttl-s ${options.catalogTtlS} is out of range 0..${MAX_CATALOG_TTL_S}`);
  }
  const project = options.project
    ? JSON.parse(readFileSync(options.project, "utf8"))
    : REFERENCE_PROJECT;
  return { colos, missMs, faults, root, ciRoot, writePrefixes, catalogTtlS: ttl, project };
}

/** The SYNC_CI_WORKER_* environment: the store and the secrets. */
export function readEnvironment(env) {
  const missing = REQUIRED_ENV.filter((name) => !env[ENV_PREFIX + name]).map((n) => ENV_PREFIX + n);
  if (missing.length) throw new UsageError(`the Worker needs ${missing.join(", ")} in its environment`);
  return {
    endpoint: env[ENV_PREFIX + "STORE_ENDPOINT"],
    bucket: env[ENV_PREFIX + "BUCKET"],
    region: env[ENV_PREFIX + "STORE_REGION"] || "us-east-1",
    accessKeyId: env[ENV_PREFIX + "ACCESS_KEY_ID"] || "",
    secretAccessKey: env[ENV_PREFIX + "SECRET_ACCESS_KEY"] || "",
    tenantSecret: env[ENV_PREFIX + "TENANT_SECRET"],
    adminToken: env[ENV_PREFIX + "ADMIN_TOKEN"],
  };
}

/** Bundle the project's entry module into one ES module, as wrangler does before a deploy. */
async function bundle(main) {
  const { build } = await import("esbuild");
  const result = await build({
    entryPoints: [main],
    bundle: true,
    format: "esm",
    platform: "neutral",
    target: "es2022",
    conditions: ["workerd", "worker", "browser"],
    mainFields: ["browser", "module", "main"],
    external: ["cloudflare:*", "node:*"],
    write: false,
    logLevel: "silent",
  });
  return result.outputFiles[0].text;
}

/** The miniflare options: one Worker per region, its own KV, every Durable Object on the first. */
export function regionWorkers(plan, store, options, version, script) {
  const { project, colos } = plan;
  const first = `region-${colos[0].toLowerCase()}`;
  return colos.map((colo, index) => {
    const name = `region-${colo.toLowerCase()}`;
    const durableObjects = {};
    const control = options.sandboxControl ? project.sandbox_control : undefined;
    for (const binding of [...project.durable_objects, ...(control ? [control] : [])]) {
      durableObjects[binding.name] = { className: binding.class_name, scriptName: first };
    }
    const kvNamespaces = {};
    for (const binding of project.kv_namespaces) kvNamespaces[binding] = `${binding}-${colo}`;
    return {
      name,
      modules: true,
      script,
      // Module names are relative to modulesRoot, so the bundle's name never climbs out of it.
      scriptPath: join(dirname(project.main), "__sync_ci_bundle__.mjs"),
      modulesRoot: dirname(project.main),
      compatibilityDate: project.compatibility_date,
      compatibilityFlags: project.compatibility_flags,
      kvNamespaces,
      durableObjects,
      bindings: {
        ...project.vars,
        ROOT: plan.root,
        CI_ROOT: plan.ciRoot,
        WRITE_PREFIXES: plan.writePrefixes.join(","),
        ALLOW_ROOT_HEADER: options.allowRootHeader ? "1" : "0",
        CATALOG_TTL_S: String(plan.catalogTtlS),
        COLO: colo,
        COLOS: colos.join(","),
        KV_MISS_MS: String(plan.missMs[colo]),
        SANDBOX: "1",
        SANDBOX_CONTROL: options.sandboxControl ? "1" : "0",
        FAULTS: JSON.stringify(plan.faults),
        MUTANT: options.mutant,
        MUTANT_REGION: index === colos.length - 1 ? "1" : "0",
        VERSION: version,
        STORE_ENDPOINT: store.endpoint,
        BUCKET: store.bucket,
        STORE_REGION: store.region,
        // Secret bindings: they travel to workerd in its configuration, never in argv.
        STORE_ACCESS_KEY_ID: store.accessKeyId,
        STORE_SECRET_ACCESS_KEY: store.secretAccessKey,
        TENANT_SECRET: store.tenantSecret,
        ADMIN_TOKEN: store.adminToken,
      },
      unsafeDirectSockets: [{ host: options.host, port: 0 }],
    };
  });
}

function writeReady(path, document) {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = join(dirname(path), `.${path.split("/").pop()}.${process.pid}.tmp`);
  writeFileSync(tmp, JSON.stringify(document) + "\n", { mode: 0o600 });
  renameSync(tmp, path);
}

async function main() {
  let options;
  let plan;
  let store;
  try {
    options = parseArgs(process.argv.slice(2));
    plan = await validate(options);
    store = readEnvironment(process.env);
  } catch (err) {
    if (err instanceof UsageError || err instanceof SyntaxError) fail(err.message, 2);
    throw err;
  }
  // miniflare's scratch directory goes next to the ready file (the sandbox's own workdir), so
  // not even a SIGKILL leaves it behind where nobody sweeps.
  process.env.TMPDIR = dirname(resolve(options.readyFile));
  const { Bucket } = await import("./src/bucket.js");
  const { Miniflare, Log, LogLevel } = await import("miniflare");
  const version = JSON.parse(readFileSync(join(HERE, "package.json"), "utf8")).version;
  let mf = null;
  // Exit 0 as worker_main does; miniflare's exit hook still kills workerd on the way out.
  for (const signal of ["SIGTERM", "SIGINT"]) process.prependListener(signal, () => process.exit(0));
  try {
    // List one key under the root so a missing bucket or bad credentials fail before serving.
    await new Bucket({ ...store, writePrefixes: [] }).probe(plan.root);
    const script = await bundle(resolve(plan.project.main));
    const workers = regionWorkers(plan, store, options, version, script);
    mf = new Miniflare({
      workers,
      host: options.host,
      port: 0,
      log: new Log(LogLevel.WARN),
      // No request.cf from workers.cloudflare.com: the sandbox stays on loopback.
      cf: false,
    });
    await mf.ready;
    const regions = [];
    for (const [index, worker] of workers.entries()) {
      const url = await mf.unsafeGetDirectURL(worker.name);
      const colo = plan.colos[index];
      regions.push({ name: colo.toLowerCase(), colo, url: url.origin });
    }
    writeReady(options.readyFile, {
      pid: process.pid,
      version,
      contract: 1,
      root: plan.root,
      regions,
      mutant: options.mutant,
      runtime: "workerd",
    });
  } catch (err) {
    await mf?.dispose().catch(() => {});
    fail(`could not start on workerd: ${err.message.split("\n")[0]}`, 1);
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await main();
}

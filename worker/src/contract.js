// Contract v1 shapes and pure helpers: no I/O, no clock (times are parameters).

export const CONTRACT_VERSION = 1;
export const CATALOG_SCHEMA = 1;
export const PUSH_LIMIT_BYTES = 64 * 1024;
export const ALERT_LIMIT_BYTES = 16 * 1024;
export const HEARTBEAT_LIMIT_BYTES = 1024;
export const CONTROL_LIMIT_BYTES = 4096;
export const CATALOG_TTL_S = 3;
export const MAX_CATALOG_TTL_S = 60;
export const OBJECT_TTL_S = 3600;
export const PROBE_TTL_S = 24 * 3600;
// Workers KV refuses an expirationTtl under 60 s: shorter freshness is judged from stored metadata.
export const KV_MIN_TTL_S = 60;
// Values bigger than this are served but never cached, so one large blob cannot flush a region.
export const MAX_CACHED_OBJECT_BYTES = 4 * 1024 * 1024;
export const SILENT_AFTER_S = 12 * 3600;
export const ALERT_RATE_PER_MIN = 30;
export const ALERT_BURST = 30;
export const MAX_ALERT_ROWS = 20;
export const MAX_ROW_FIELDS = 20;
export const MAX_ROW_VALUE_CHARS = 200;
export const MAX_SEEN_KEYS = 100000;
export const MAX_FAULT_MS = 60000;
export const MAX_CLOCK_OFFSET_S = 10 * 366 * 86400;
export const TENANT_HEADER = "x-sync-tenant";
export const ROOT_HEADER = "x-sync-ci-root";
export const ALERT_FIELDS = ["check", "message", "host", "version", "ts", "idempotency_key"];
export const FAULT_KEYS = ["5xx_rate", "latency_ms", "bucket_latency_ms"];
export const KV_MISS_FAULT_PREFIX = "kv_miss_ms.";

export const SHA256_RE = /^[0-9a-f]{64}$/;
export const TENANT_RE = /^[a-z0-9][a-z0-9_-]{0,62}$/;
export const NONCE_RE = /^[A-Za-z0-9_-]{8,128}$/;
// One key segment: no '/', so R/_alerts/<tenant>/<key>.json cannot climb out of its folder.
export const IDEMPOTENCY_RE = /^[A-Za-z0-9_.:-]{1,128}$/;
export const SHA_SEGMENT_RE = /^[0-9a-f]{7,40}$/;
export const COLO_RE = /^[A-Z]{3}$/;
// C0 (tab and newline included), DEL, C1, the bidi overrides and the line separators.
export const CONTROL_RE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;
const CONTROL_STRIP_RE = /[\u0000-\u001f\u007f-\u009f]/g;

/** An answer other than success, rendered as {"error", "code"}. */
export class ApiError extends Error {
  constructor(status, message, headers = {}) {
    super(message);
    this.status = status;
    this.headers = headers;
  }
}

/** A bucket that could not be reached or answered an error (502). */
export class StoreError extends Error {}

/** A write the Worker's write policy refuses (403). */
export class PolicyError extends Error {}

/** Render seconds since the epoch as YYYY-MM-DDTHH:MM:SSZ (no fraction, no offset). */
export function isoTime(epochS) {
  return new Date(Math.floor(epochS) * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
}

/** Render seconds since the epoch as an RFC 9110 IMF-fixdate (the Date header). */
export function httpDate(epochS) {
  return new Date(Math.floor(epochS) * 1000).toUTCString();
}

/** True when `prefix` is exactly `ciRoot<sha>/` with 7-40 lowercase hex. */
export function isFullCiPrefix(prefix, ciRoot) {
  if (!prefix.startsWith(ciRoot) || !prefix.endsWith("/")) return false;
  return SHA_SEGMENT_RE.test(prefix.slice(ciRoot.length, -1));
}

/** Refuse keys with '..', '.', empty segments, absolute paths or control characters. */
export function keyProblem(key) {
  if (!key || key.startsWith("/") || key.includes("\\")) return "empty, absolute or with a backslash";
  const body = key.endsWith("/") ? key.slice(0, -1) : key;
  if (body.split("/").some((part) => part === "" || part === "." || part === "..")) {
    return "empty, '.' or '..' path segment";
  }
  if (/[\u0000-\u001f\u007f]/.test(key)) return "control character";
  return "";
}

/** The root a request works under, or ApiError(400) for a refused root header. */
export function selectRoot(header, config) {
  if (header === null || header === config.root) return config.root;
  if (!config.allowRootHeader) {
    throw new ApiError(400, `${ROOT_HEADER} is not accepted by this Worker`);
  }
  if (isFullCiPrefix(header, config.ciRoot)) return header;
  throw new ApiError(
    400,
    `${ROOT_HEADER} must be '${config.root}' or a full ${config.ciRoot}<sha>/ prefix`,
  );
}

export const catalogKey = (root) => `${root}catalog.json`;
export const objectKey = (root, digest) => `${root}objects/${digest}`;
export const tenantStateKey = (root, tenant) => `${root}tenants/${tenant}/state.json`;
export const alertCopyKey = (root, tenant, idem) => `${root}_alerts/${tenant}/${idem}.json`;

/** Parse JSON bytes or throw ApiError(400) naming the document. */
export function parseJsonBody(bytes, what) {
  let text;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
    return JSON.parse(text);
  } catch (err) {
    throw new ApiError(400, `${what} is not valid JSON: ${err.message}`);
  }
}

const isObject = (value) => value !== null && typeof value === "object" && !Array.isArray(value);
const isWholeNumber = (value) => typeof value === "number" && Number.isInteger(value);

/** Validate a catalog document; return a problem string, or "" when it conforms. */
export function catalogProblem(document, what) {
  if (!isObject(document)) return `${what} is not a JSON object`;
  if (document.schema !== CATALOG_SCHEMA) {
    return `${what} has schema ${JSON.stringify(document.schema)}, expected ${CATALOG_SCHEMA}`;
  }
  if (!isWholeNumber(document.generation) || document.generation < 0) {
    return `${what} generation ${JSON.stringify(document.generation)} is not a non-negative integer`;
  }
  if (!isObject(document.entries)) return `${what} entries is not an object`;
  for (const name of Object.keys(document.entries).sort()) {
    const entry = document.entries[name];
    if (!isObject(entry)) return `${what} entry '${name}' is not an object`;
    if (typeof entry.sha256 !== "string" || !SHA256_RE.test(entry.sha256)) {
      return `${what} entry '${name}' has no valid sha256`;
    }
    if (!isWholeNumber(entry.size) || entry.size < 0) {
      return `${what} entry '${name}' has an invalid size ${JSON.stringify(entry.size)}`;
    }
  }
  return "";
}

/** The install manifest of a valid catalog. */
export function installManifest(catalog) {
  const entries = {};
  for (const name of Object.keys(catalog.entries).sort()) {
    const { sha256, size } = catalog.entries[name];
    entries[name] = { sha256, size };
  }
  return { schema: CATALOG_SCHEMA, generation: catalog.generation, entries, object_base: "/o/" };
}

/** Check an alert's six string fields; return them, or throw ApiError(400). */
export function validateAlert(document) {
  if (!isObject(document)) throw new ApiError(400, "alert body is not a JSON object");
  const missing = ALERT_FIELDS.filter((f) => typeof document[f] !== "string" || !document[f]);
  if (missing.length) throw new ApiError(400, `alert body lacks ${missing.join(", ")}`);
  const alert = {};
  for (const name of ALERT_FIELDS) {
    // Alerts are printed on the maintainer's terminal; an escape sequence could rewrite it.
    const found = CONTROL_RE.exec(document[name]);
    if (found) {
      const code = found[0].codePointAt(0).toString(16).toUpperCase().padStart(4, "0");
      throw new ApiError(
        400,
        `alert field '${name}' holds a control character (U+${code}); send one line of plain text`,
      );
    }
    alert[name] = document[name];
  }
  return alert;
}

/** What the alert-controls mutant does instead of refusing: strip C0/C1 from string fields. */
export function stripControls(document) {
  if (!isObject(document)) return document;
  const out = {};
  for (const [key, value] of Object.entries(document)) {
    out[key] = typeof value === "string" ? value.replace(CONTROL_STRIP_RE, "") : value;
  }
  return out;
}

/**
 * Validate an alert's optional failing rows and cap their number and size. The contract types
 * `rows` as an array: absent means none, an explicit null is refused like any other non-list.
 */
export function parseAlertRows(raw) {
  if (raw === undefined) return [];
  if (!Array.isArray(raw) || !raw.every(isObject)) {
    throw new ApiError(400, "alert rows must be a list of objects");
  }
  return raw.slice(0, MAX_ALERT_ROWS).map((row) => {
    const clean = {};
    for (let [key, value] of Object.entries(row).slice(0, MAX_ROW_FIELDS)) {
      if (value !== null && typeof value === "object") value = sortedJson(value);
      if (typeof value === "string") value = value.slice(0, MAX_ROW_VALUE_CHARS);
      clean[String(key).slice(0, 64)] = value;
    }
    return clean;
  });
}

/** JSON text with object keys sorted at every depth, spaced as Python's json.dumps. */
export function sortedJson(value) {
  if (Array.isArray(value)) return `[${value.map(sortedJson).join(", ")}]`;
  if (isObject(value)) {
    const parts = Object.keys(value)
      .sort()
      .map((key) => `${JSON.stringify(key)}: ${sortedJson(value[key])}`);
    return `{${parts.join(", ")}}`;
  }
  return JSON.stringify(value);
}

/** Parse one fault setting (from text or JSON) and return its number, or throw a message. */
export function parseFaultValue(key, value, colos) {
  if (!FAULT_KEYS.includes(key)) {
    const colo = key.startsWith(KV_MISS_FAULT_PREFIX) ? key.slice(KV_MISS_FAULT_PREFIX.length) : "";
    if (!colo || !colos.includes(colo)) {
      const known = [...FAULT_KEYS, ...[...colos].sort().map((c) => KV_MISS_FAULT_PREFIX + c)];
      throw new Error(`unknown fault '${key}'; use one of: ${known.join(", ")}`);
    }
  }
  let number = NaN;
  if (typeof value === "number") number = value;
  else if (typeof value === "string" && value.trim() !== "") number = Number(value.trim());
  else throw new Error(`fault ${key} must be a number, not ${JSON.stringify(value)}`);
  if (Number.isNaN(number)) throw new Error(`fault ${key} must be a number, not ${JSON.stringify(value)}`);
  const high = key === "5xx_rate" ? 1 : MAX_FAULT_MS;
  if (!Number.isFinite(number) || number < 0 || number > high) {
    throw new Error(`fault ${key} = ${JSON.stringify(value)} is out of range 0..${high}`);
  }
  return number;
}

/** The faults after a runtime update: null removes a key, {"clear": true} resets first. */
export function applyFaultUpdate(current, update, colos) {
  if (!isObject(update)) throw new Error("fault update must be a JSON object");
  const clear = update.clear ?? false;
  if (typeof clear !== "boolean") throw new Error("fault update 'clear' must be true or false");
  const result = clear ? {} : { ...current };
  for (const [key, value] of Object.entries(update)) {
    if (key === "clear") continue;
    if (value === null) {
      parseFaultValue(key, 0, colos);
      delete result[key];
    } else {
      result[key] = parseFaultValue(key, value, colos);
    }
  }
  return result;
}

/** Spend one token of a bucket {tokens, updatedAt}; return [bucket, seconds to wait or 0]. */
export function takeToken(bucket, nowS, ratePerS = ALERT_RATE_PER_MIN / 60, burst = ALERT_BURST) {
  const tokens = Math.min(burst, bucket.tokens + Math.max(0, nowS - bucket.updatedAt) * ratePerS);
  if (tokens >= 1) return [{ tokens: tokens - 1, updatedAt: nowS }, 0];
  return [{ tokens, updatedAt: nowS }, (1 - tokens) / ratePerS];
}

/** Aggregate a root's alerts by check (most recent first) and find tenants gone silent. */
export function summarizeStatus(checks, heartbeats, nowS) {
  const ordered = Object.entries(checks).sort(
    ([a, x], [b, y]) => y.last_seen - x.last_seen || (a < b ? -1 : a > b ? 1 : 0),
  );
  const beats = Object.entries(heartbeats);
  const silent = beats
    .filter(([, seen]) => nowS - seen > SILENT_AFTER_S)
    .sort(([a, x], [b, y]) => x - y || (a < b ? -1 : a > b ? 1 : 0));
  const summary = {};
  for (const [name, stats] of ordered) {
    summary[name] = {
      count: stats.count,
      tenants: [...stats.tenants].sort(),
      tenant_count: stats.tenants.length,
      first_seen: isoTime(stats.first_seen),
      last_seen: isoTime(stats.last_seen),
      last_message: stats.last_message,
      last_tenant: stats.last_tenant,
      last_rows: stats.last_rows,
    };
  }
  return {
    generated_at: isoTime(nowS),
    checks: summary,
    alert_count: ordered.reduce((sum, [, stats]) => sum + stats.count, 0),
    silent_after_s: SILENT_AFTER_S,
    silent_tenants: silent.map(([tenant, seen]) => ({
      tenant,
      last_seen: isoTime(seen),
      silent_for_s: Math.trunc(nowS - seen),
    })),
    reporting_tenants: beats
      .filter(([, seen]) => nowS - seen <= SILENT_AFTER_S)
      .map(([tenant]) => tenant)
      .sort(),
  };
}

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;" };
const esc = (text) => String(text ?? "").replace(/[&<>"']/g, (c) => ESCAPES[c]);

/** Render a status summary as a small self-contained HTML page, failing checks first. */
export function renderStatusHtml(summary) {
  const parts = [
    "<!doctype html>",
    '<html lang="en"><head><meta charset="utf-8"><title>Sync status</title>',
    "<style>body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse}" +
      "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}.bad{color:#b00}</style>",
    "</head><body>",
    "<h1>Sync status</h1>",
    `<p>Root <code>${esc(summary.root)}</code>, generated ${esc(summary.generated_at)}</p>`,
    "<h2>Failing checks</h2>",
  ];
  const checks = Object.entries(summary.checks ?? {});
  if (checks.length) {
    parts.push(
      "<table><tr><th>check</th><th>alerts</th><th>tenants</th><th>first seen</th>" +
        "<th>last seen</th><th>last message</th></tr>",
    );
    for (const [name, row] of checks) {
      parts.push(
        `<tr><td class="bad">${esc(name)}</td><td>${Math.trunc(row.count)}</td>` +
          `<td>${Math.trunc(row.tenant_count)}: ${esc(row.tenants.join(", "))}</td>` +
          `<td>${esc(row.first_seen)}</td><td>${esc(row.last_seen)}</td>` +
          `<td>${esc(row.last_message)}</td></tr>`,
      );
    }
    parts.push("</table>");
  } else {
    parts.push("<p>No failing checks.</p>");
  }
  const hours = Math.trunc(summary.silent_after_s / 3600);
  parts.push(`<h2>Silent tenants (no heartbeat for more than ${hours} h)</h2>`);
  if (summary.silent_tenants.length) {
    parts.push("<table><tr><th>tenant</th><th>last heartbeat</th><th>silent for</th></tr>");
    for (const row of summary.silent_tenants) {
      parts.push(
        `<tr><td class="bad">${esc(row.tenant)}</td><td>${esc(row.last_seen)}</td>` +
          `<td>${Math.trunc(row.silent_for_s / 3600)} h</td></tr>`,
      );
    }
    parts.push("</table>");
  } else {
    parts.push("<p>No silent tenants.</p>");
  }
  const reporting = summary.reporting_tenants;
  parts.push(`<h2>Reporting tenants (${reporting.length})</h2>`);
  parts.push(`<p>${esc(reporting.join(", ")) || "none"}</p>`);
  parts.push("</body></html>");
  return parts.join("\n") + "\n";
}

/** Render the server-timing header value (milliseconds). */
export function serverTiming(timing, totalMs) {
  const metrics = [];
  if (timing.kvMs !== null) metrics.push(`kv;dur=${timing.kvMs.toFixed(2)}`);
  if (timing.bucketUsed) metrics.push(`bucket;dur=${timing.bucketMs.toFixed(2)}`);
  if (timing.faultMs) metrics.push(`fault;dur=${timing.faultMs.toFixed(2)}`);
  metrics.push(`total;dur=${totalMs.toFixed(2)}`);
  return metrics.join(", ");
}

/** Lowercase hex of bytes. */
export function hex(buffer) {
  return [...new Uint8Array(buffer)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

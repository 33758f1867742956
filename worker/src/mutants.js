// The names of the contract mutants this Worker can commit (sandbox only, loopback only).
// The catalogue, and the suite row that catches each, is docs/mutants.md; a test keeps this list
// equal to the Python reference Worker's (sync_ci/sandbox/mutants.py MUTANTS).

export const MUTANTS = [
  "alert-controls",
  "alert-no-dedup",
  "bad-cf-ray",
  "corrupt-object",
  "cross-tenant-push",
  "error-body-200",
  "missing-install-entry",
  "no-413",
  "no-cf-ray",
  "no-date",
  "push-auth-bypass",
  "push-no-write",
  "region-500",
  "region-down",
  "slow-install",
  "stale-catalog",
  "status-open",
  "x-cache-always-hit",
];

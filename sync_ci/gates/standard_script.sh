#!/usr/bin/env bash
# The standard platform script, recorded by `invoke record-cast`: install -> doctor -> read-only smoke.
# Its last line is the sentinel the platforms gate reads:
#   SYNC_CI_RESULT rc=<first non-zero exit code, else 0> version=<installed sync-ci> platform=<name>
# Each step can be replaced through the environment (e.g. to install from a wheel file).
set -u
platform="${SYNC_CI_PLATFORM:-unknown}"
install_cmd="${SYNC_CI_INSTALL_CMD:-python3 -m pip install --quiet ${SYNC_CI_INSTALL_SPEC:-.}}"
doctor_cmd="${SYNC_CI_DOCTOR_CMD:-sync-ci doctor}"
smoke_cmd="${SYNC_CI_SMOKE_CMD:-sync-ci smoke --read-only}"
rc=0

step() {
  local name="$1"; shift
  echo "== ${name}: $*"
  bash -c "$*"
  local code=$?
  echo "== ${name}: exit ${code}"
  if [ "${code}" -ne 0 ] && [ "${rc}" -eq 0 ]; then rc=${code}; fi
}

step install "${install_cmd}"
step doctor "${doctor_cmd}"
step smoke "${smoke_cmd}"
version="$(sync-ci --version 2>/dev/null | awk '{print $NF}')"
echo "SYNC_CI_RESULT rc=${rc} version=${version:-missing} platform=${platform}"
exit "${rc}"

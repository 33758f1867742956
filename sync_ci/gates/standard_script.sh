#!/usr/bin/env bash
# The standard platform script, recorded by `invoke record-cast`: install -> doctor -> read-only smoke.
# It prints what the platform is and what was installed, so the platforms gate judges evidence:
#   SYNC_CI_EVIDENCE <key>=<value>     uname (`uname -srm`), os_release_id, os_release_version_id,
#                                      sw_vers_product, sw_vers_version, sw_vers_build (macOS),
#                                      wsl_interop (present|absent), dist_version, dist_sha256
#   SYNC_CI_STEP <name> start: <cmd>   and   SYNC_CI_STEP <name> exit <code>, for install, doctor, smoke
#   SYNC_CI_RESULT rc=<first non-zero exit code, else 0> version=<installed sync-ci> platform=<name>
# Each step can be replaced through the environment (e.g. to install from a wheel file).
set -u
platform="${SYNC_CI_PLATFORM:-unknown}"
# The read-only smoke defaults to the embedded sandbox, which needs the `sandbox` extra.
install_cmd="${SYNC_CI_INSTALL_CMD:-python3 -m pip install --quiet ${SYNC_CI_INSTALL_SPEC:-'.[sandbox]'}}"
doctor_cmd="${SYNC_CI_DOCTOR_CMD:-sync-ci doctor}"
smoke_cmd="${SYNC_CI_SMOKE_CMD:-sync-ci smoke --read-only}"
rc=0

evidence() {
  printf 'SYNC_CI_EVIDENCE %s=%s\n' "$1" "$2"
}

step() {
  local name="$1"; shift
  echo "SYNC_CI_STEP ${name} start: $*"
  bash -c "$*"
  local code=$?
  echo "SYNC_CI_STEP ${name} exit ${code}"
  if [ "${code}" -ne 0 ] && [ "${rc}" -eq 0 ]; then rc=${code}; fi
}

# The interpreter sync-ci was installed into: the console script's own shebang, else python3.
installed_python() {
  local script shebang
  script="$(command -v sync-ci 2>/dev/null)" || { echo python3; return; }
  shebang="$(head -n 1 "${script}" 2>/dev/null)"
  case "${shebang}" in
    '#!'*python*) echo "${shebang#\#!}" ;;
    *) echo python3 ;;
  esac
}

evidence uname "$(uname -srm 2>/dev/null || echo missing)"
if [ -r /etc/os-release ]; then
  (
    # shellcheck disable=SC1091
    . /etc/os-release
    evidence os_release_id "${ID:-}"
    evidence os_release_version_id "${VERSION_ID:-}"
  )
fi
if command -v sw_vers >/dev/null 2>&1; then
  evidence sw_vers_product "$(sw_vers -productName 2>/dev/null)"
  evidence sw_vers_version "$(sw_vers -productVersion 2>/dev/null)"
  evidence sw_vers_build "$(sw_vers -buildVersion 2>/dev/null)"
fi
if [ -e /proc/sys/fs/binfmt_misc/WSLInterop ] || [ -e /proc/sys/fs/binfmt_misc/WSLInterop-late ]; then
  evidence wsl_interop present
else
  evidence wsl_interop absent
fi

step install "${install_cmd}"
# A word-split on purpose: the shebang may carry an interpreter option.
# shellcheck disable=SC2046
$(installed_python) -m sync_ci.gates.platforms evidence || evidence dist_sha256 missing
step doctor "${doctor_cmd}"
step smoke "${smoke_cmd}"
version="$(sync-ci --version 2>/dev/null | awk '{print $NF}')"
echo "SYNC_CI_RESULT rc=${rc} version=${version:-missing} platform=${platform}"
exit "${rc}"

#!/usr/bin/env bash
# Runs every test of the project against real components: unit tests, and integration tests
# against a real etcd + kube-apiserver + kube-controller-manager and a real Dex, all on loopback.
# The stack is started once for the run (by the first test that needs it) and stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

# The browser test (tests/tests/browser.rs) drives Debian's Chromium with playwright-core from
# e2e/package-lock.json (no browser download). Checked before the tool build, which can take
# half an hour on a fresh machine.
if [ ! -x /usr/bin/chromium ] || ! command -v certutil >/dev/null; then
  echo "hack/test.sh: the browser test needs /usr/bin/chromium and certutil:" >&2
  echo "  sudo apt-get install chromium libnss3-tools   (.ci/run installs them)" >&2
  exit 1
fi
command -v npm >/dev/null || { echo "hack/test.sh: the browser test needs Node.js and npm" >&2; exit 1; }
# The in-cluster test (tests/tests/incluster.rs) runs a real node: containerd, runc, the CNI
# plugins and iptables from Debian, as root.
node_missing=()
for c in containerd runc ctr iptables; do command -v "$c" >/dev/null || node_missing+=("$c"); done
[ -x /usr/lib/cni/bridge ] || node_missing+=(/usr/lib/cni/bridge)
if [ ${#node_missing[@]} -gt 0 ] || [ "$(id -u)" != 0 ]; then
  echo "hack/test.sh: the in-cluster test needs root and containerd, runc, the CNI plugins and" >&2
  echo "  iptables (missing: ${node_missing[*]:-none}; uid $(id -u)):" >&2
  echo "  sudo apt-get install containerd runc containernetworking-plugins iptables   (.ci/run installs them)" >&2
  exit 1
fi

# The fuzz targets (fuzz/, hack/fuzz.sh) need the nightly toolchain, which the machine image
# has; cargo-fuzz itself is installed from crates.io when missing.
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "hack/test.sh: the fuzz targets need the nightly toolchain (rustup toolchain install nightly)" >&2
  exit 1
fi

# The Keycloak tests (gateway/tests/keycloak.rs) run Keycloak's release zip on a JDK 21 or newer
# (hack/build-tools.sh picks the newest under /usr/lib/jvm, or KEYCLOAK_JAVA_HOME).
# shellcheck disable=SC2086
if ! command -v unzip >/dev/null ||
  ! grep -qsE '^JAVA_VERSION="(2[1-9]|[3-9][0-9])' ${KEYCLOAK_JAVA_HOME:-/usr/lib/jvm/*}/release; then
  echo "hack/test.sh: the Keycloak tests need unzip and a JDK 21 or newer under /usr/lib/jvm" >&2
  echo "  (or KEYCLOAK_JAVA_HOME); .ci/run installs unzip, the machine image ships Temurin 25" >&2
  exit 1
fi

# A fresh stack for this run, so nothing left over from an earlier run can make a test pass.
PORTCULLIS_STACK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/portcullis-test.XXXXXX")/stack"
export PORTCULLIS_STACK_DIR
run_dir=$(dirname "$PORTCULLIS_STACK_DIR")

# The Go tools build (most of an hour on a fresh machine, a no-op after) runs beside the Rust
# build below: each has phases that leave a core idle (links, module downloads), so together
# they take much less than one after the other. Two groups (hack/build-tools.sh): the tests
# start once `core` is built (the control plane, the identity providers, kubectl, Helm); the
# `rest` (Jaeger, the node's components, Traefik, actionlint) follows at once at a lower
# priority, beside the Rust build and then the tests (most of which wait on processes), and a
# test that needs one of those tools waits for it while $PORTCULLIS_TOOLS_PENDING exists
# (tests/src/tools.rs).
#
# background PRIORITY COMMAND...: COMMAND in a session of its own (so stop_stack can end all of
# it), at nice PRIORITY. With sched_autogroup on (the default of many kernels) `nice` only ranks
# processes within one session, so the new session's own nice is set too.
background() {
  local priority=$1
  shift
  # shellcheck disable=SC2016 # expanded by the inner shell
  setsid bash -c 'echo "$1" >/proc/self/autogroup 2>/dev/null; shift; exec nice -n "$0" "$@"' \
    "$priority" "$priority" "$@" &
}
tools_log="$run_dir/build-tools.log"
rest_log="$run_dir/build-tools-rest.log"
core_status="$run_dir/build-tools-core.status"
PORTCULLIS_TOOLS_PENDING="$run_dir/tools-pending"
export PORTCULLIS_TOOLS_PENDING
touch "$PORTCULLIS_TOOLS_PENDING"
# shellcheck disable=SC2016 # expanded by the inner shell
setsid bash -c '
  hack/build-tools.sh core >"$0" 2>&1; status=$?; echo "$status" >"$2"
  if [ "$status" = 0 ]; then
    echo 10 >/proc/self/autogroup 2>/dev/null
    nice -n 10 hack/build-tools.sh rest >"$1" 2>&1; status=$?
  fi
  rm -f "$PORTCULLIS_TOOLS_PENDING"
  exit "$status"' "$tools_log" "$rest_log" "$core_status" &
tools_build=$!
fuzz_build=""
stop_stack() {
  local job
  for job in "$tools_build" "$fuzz_build"; do
    if [ -n "$job" ]; then kill -- -"$job" 2>/dev/null || true; fi
  done
  target/debug/devstack down --state-dir "$PORTCULLIS_STACK_DIR" >/dev/null 2>&1 || true
}
trap stop_stack EXIT

npm ci --prefix e2e --no-audit --no-fund --loglevel=error
cargo build --workspace --all-targets --locked
# The images the in-cluster test imports into its node (static release binaries).
hack/build-images.sh

# tools_failed LOG: says which build failed, with the end of its log.
tools_failed() {
  echo "hack/test.sh: building the tools failed:" >&2
  tail -n 60 "$1" >&2
  exit 1
}
until [ -s "$core_status" ]; do
  kill -0 "$tools_build" 2>/dev/null || break
  sleep 1
done
[ "$(cat "$core_status" 2>/dev/null)" = 0 ] || tools_failed "$tools_log"
cat "$tools_log"
eval "$(hack/tools-env.sh)"

# The fuzz targets build (release, coverage-instrumented, their own target directory outside
# the checkout) in the background while the integration tests run, which mostly wait on
# processes: at the `rest` tools build's lower priority, so the two share what the tests leave
# idle; each target then runs for a bounded time after the tests.
# A filtered run (arguments given) skips them.
fuzz_log="$run_dir/fuzz-build.log"
if [ $# -eq 0 ]; then
  FUZZ_SANITIZER=none background 10 hack/fuzz.sh --build-only >"$fuzz_log" 2>&1
  fuzz_build=$!
fi

tests=0
cargo test --workspace --locked --no-fail-fast "$@" || tests=$?

wait "$tools_build" || { tools_build=""; tools_failed "$rest_log"; }
tools_build=""
cat "$rest_log"
[ "$tests" = 0 ] || exit "$tests"

if [ -n "$fuzz_build" ]; then
  if ! wait "$fuzz_build"; then
    fuzz_build=""
    echo "hack/test.sh: building the fuzz targets failed:" >&2
    tail -n 40 "$fuzz_log" >&2
    exit 1
  fi
  fuzz_build=""
  FUZZ_SANITIZER=none FUZZ_SECONDS="${FUZZ_SECONDS:-15}" hack/fuzz.sh
fi

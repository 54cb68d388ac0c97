#!/usr/bin/env bash
# Revocation propagation benchmark: the time from the API server accepting
# `{"spec":{"revoked":true}}` on an AccessSession to the moment every one of N real gateway
# processes (cluster mode, following one real operator) refuses that session's app token, for
# N = 2, 10, 20, over BENCH_REVOCATIONS revocations each; then the memory of the operator and a
# gateway with BENCH_MEMORY_SESSIONS sessions of which BENCH_MEMORY_REVOKED are revoked, and the
# time a new gateway takes to become ready with that state.
#
# Everything runs on 127.0.0.1 in a private control plane (etcd, kube-apiserver, controller
# manager) the benchmark starts and stops itself; see tests/src/bin/bench-revocation.rs.
#
# Usage: hack/bench-revocation.sh
# Settings (environment): BENCH_GATEWAYS=2,10,20 BENCH_REVOCATIONS=100 BENCH_POLL_PAUSE=1ms
#   BENCH_MEMORY_SESSIONS=100000 BENCH_MEMORY_REVOKED=10000 (0: skip the memory part)
#   BENCH_DIR (working directory, default a temporary one, kept when the run fails)
#   BENCH_NO_BUILD=1 (run the release binaries already in $CARGO_TARGET_DIR/release).
set -euo pipefail
cd "$(dirname "$0")/.."

GATEWAYS=${BENCH_GATEWAYS:-2,10,20}
REVOCATIONS=${BENCH_REVOCATIONS:-100}
POLL_PAUSE=${BENCH_POLL_PAUSE:-1ms}
MEMORY_SESSIONS=${BENCH_MEMORY_SESSIONS:-100000}
MEMORY_REVOKED=${BENCH_MEMORY_REVOKED:-10000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/bench}
WORK=${BENCH_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/portcullis-bench-revocation.XXXXXX")}
mkdir -p "$WORK"

log() { printf '[bench-revocation] %s\n' "$*" >&2; }

hack/build-tools.sh kube-apiserver kube-controller-manager etcd dex
eval "$(hack/tools-env.sh)"

if [ "${BENCH_NO_BUILD:-0}" = 1 ]; then
  log "BENCH_NO_BUILD=1: using the binaries already in $CARGO_TARGET_DIR/release"
else
  log "building release binaries into $CARGO_TARGET_DIR"
  cargo build --release --locked --quiet \
    -p portcullis-gateway --bin portcullis-gateway \
    -p portcullis-operator --bin portcullis-operator \
    -p portcullis-tests --bin bench-revocation
fi
BIN="$CARGO_TARGET_DIR/release"

log "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs"
status=0
"$BIN/bench-revocation" \
  --gateway-bin "$BIN/portcullis-gateway" \
  --operator-bin "$BIN/portcullis-operator" \
  --dir "$WORK" \
  --gateways "$GATEWAYS" \
  --revocations "$REVOCATIONS" \
  --poll-pause "$POLL_PAUSE" \
  --memory-sessions "$MEMORY_SESSIONS" \
  --memory-revoked "$MEMORY_REVOKED" || status=$?
log "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "$status" = 0 ] && [ -z "${BENCH_DIR:-}" ]; then
  rm -rf "$WORK"
else
  log "logs kept in $WORK"
fi
exit "$status"

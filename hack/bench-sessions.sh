#!/usr/bin/env bash
# Session write load benchmark: the API-server writes (and etcd puts) that keeping N active
# sessions confirmed with the identity provider costs. A private control plane (etcd,
# kube-apiserver, controller manager), a real Dex and two real gateways recording
# AccessSessions, all on 127.0.0.1; BENCH_SESSIONS users log in through the gateway and Dex as a
# browser does and are kept active through both gateways while the API server's, etcd's and the
# gateways' own counters are read. See tests/src/bin/bench-sessions.rs.
#
# The results (tables, commit, machine, load) replace the section between the
# `bench-sessions` markers of BENCHMARKS.md, unless BENCH_NO_REPORT=1.
#
# Usage: hack/bench-sessions.sh
# Settings (environment): BENCH_SESSIONS=10000 BENCH_INTERVAL=300 (the gateways'
#   refreshInterval, seconds: the default one) BENCH_WARMUP=1 BENCH_WINDOWS=2 (intervals) BENCH_CONCURRENCY=16
#   (concurrent logins)
#   BENCH_DIR (working directory, default a temporary one, kept when the run fails)
#   BENCH_NO_BUILD=1 (run the release binaries already in $CARGO_TARGET_DIR/release).
set -euo pipefail
cd "$(dirname "$0")/.."

SESSIONS=${BENCH_SESSIONS:-10000}
INTERVAL=${BENCH_INTERVAL:-300}
WARMUP=${BENCH_WARMUP:-1}
WINDOWS=${BENCH_WINDOWS:-2}
CONCURRENCY=${BENCH_CONCURRENCY:-16}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/bench}
WORK=${BENCH_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/portcullis-bench-sessions.XXXXXX")}
mkdir -p "$WORK"

log() { printf '[bench-sessions] %s\n' "$*" >&2; }

hack/build-tools.sh kube-apiserver kube-controller-manager etcd dex
eval "$(hack/tools-env.sh)"

if [ "${BENCH_NO_BUILD:-0}" = 1 ]; then
  log "BENCH_NO_BUILD=1: using the binaries already in $CARGO_TARGET_DIR/release"
else
  log "building release binaries into $CARGO_TARGET_DIR"
  cargo build --release --locked --quiet \
    -p portcullis-gateway --bin portcullis-gateway \
    -p portcullis-tests --bin bench-sessions
fi
BIN="$CARGO_TARGET_DIR/release"

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average before: $LOAD_BEFORE; $(nproc) CPUs"
# Thousands of browsers' connections during the logins.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
status=0
"$BIN/bench-sessions" \
  --gateway-bin "$BIN/portcullis-gateway" \
  --dir "$WORK" \
  --sessions "$SESSIONS" \
  --interval "$INTERVAL" \
  --warmup "$WARMUP" \
  --windows "$WINDOWS" \
  --concurrency "$CONCURRENCY" | tee "$WORK/results.md" || status=$?
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average after: $LOAD_AFTER"
if [ "$status" = 0 ] && [ "${BENCH_NO_REPORT:-0}" != 1 ]; then
  {
    echo "Measured $(date -u +%Y-%m-%d) at commit \`$(git rev-parse --short HEAD)\`$(git diff --quiet HEAD -- . ':(exclude)BENCHMARKS.md' 2>/dev/null || echo ' (with uncommitted changes)'),"
    echo "$(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), load average $LOAD_BEFORE before and $LOAD_AFTER after;"
    echo "\`BENCH_SESSIONS=$SESSIONS BENCH_INTERVAL=$INTERVAL BENCH_WARMUP=$WARMUP BENCH_WINDOWS=$WINDOWS BENCH_CONCURRENCY=$CONCURRENCY hack/bench-sessions.sh\`:"
    echo
    cat "$WORK/results.md"
  } > "$WORK/report.md"
  hack/bench-report.sh bench-sessions "$WORK/report.md"
fi
if [ "$status" = 0 ] && [ -z "${BENCH_DIR:-}" ]; then
  rm -rf "$WORK"
else
  log "logs kept in $WORK"
fi
exit "$status"

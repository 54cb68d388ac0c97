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
# The results (tables, commit, machine, load) replace sections of BENCHMARKS.md, unless
# BENCH_NO_REPORT=1: the propagation tables the one between the `bench-revocation` markers, the
# memory table the one between the `bench-revocation-memory` markers. BENCH_REPORT names the
# parts to write (default: the parts that ran), so a memory-only run (BENCH_GATEWAYS=2
# BENCH_REVOCATIONS=5 BENCH_STREAM_CLIENTS= BENCH_REPORT=memory) leaves the propagation
# results of a full run in place.
#
# Usage: hack/bench-revocation.sh
# Settings (environment): BENCH_GATEWAYS=2,10,20,50,100 BENCH_REVOCATIONS=100
#   BENCH_MEASURE=applied (each gateway's own time of applying the change; or poll)
#   BENCH_POLL_PAUSE=1ms (poll mode) BENCH_STREAM_CLIENTS=100,1000 (simulated fleet; empty: skip)
#   BENCH_MEMORY_SESSIONS=100000 BENCH_MEMORY_REVOKED=10000 (0: skip the memory part)
#   BENCH_DIR (working directory, default a temporary one, kept when the run fails)
#   BENCH_REPORT=propagation,memory (the parts written into BENCHMARKS.md)
#   BENCH_NO_BUILD=1 (run the release binaries already in $CARGO_TARGET_DIR/release).
set -euo pipefail
cd "$(dirname "$0")/.."

GATEWAYS=${BENCH_GATEWAYS:-2,10,20,50,100}
MEASURE=${BENCH_MEASURE:-applied}
STREAM_CLIENTS=${BENCH_STREAM_CLIENTS-100,1000}
REVOCATIONS=${BENCH_REVOCATIONS:-100}
POLL_PAUSE=${BENCH_POLL_PAUSE:-1ms}
MEMORY_SESSIONS=${BENCH_MEMORY_SESSIONS:-100000}
MEMORY_REVOKED=${BENCH_MEMORY_REVOKED:-10000}
if [ "$MEMORY_SESSIONS" = 0 ]; then REPORT=${BENCH_REPORT:-propagation}; else REPORT=${BENCH_REPORT:-propagation,memory}; fi
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

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average before: $LOAD_BEFORE; $(nproc) CPUs"
# Many gateway processes each hold a few connections and files.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
status=0
"$BIN/bench-revocation" \
  --gateway-bin "$BIN/portcullis-gateway" \
  --operator-bin "$BIN/portcullis-operator" \
  --dir "$WORK" \
  --gateways "$GATEWAYS" \
  --revocations "$REVOCATIONS" \
  --measure "$MEASURE" \
  --poll-pause "$POLL_PAUSE" \
  ${STREAM_CLIENTS:+--stream-clients "$STREAM_CLIENTS"} \
  --memory-sessions "$MEMORY_SESSIONS" \
  --memory-revoked "$MEMORY_REVOKED" | tee "$WORK/results.md" || status=$?
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average after: $LOAD_AFTER"
# The memory part's output starts at its "memory:" line; the propagation tables come before.
report() { # NAME PART-FILE
  {
    echo "Measured $(date -u +%Y-%m-%d) at commit \`$(git rev-parse --short HEAD)\`$(git diff --quiet HEAD -- . ':(exclude)BENCHMARKS.md' 2>/dev/null || echo ' (with uncommitted changes)'),"
    echo "$(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), load average $LOAD_BEFORE before and $LOAD_AFTER after;"
    echo "\`BENCH_GATEWAYS=$GATEWAYS BENCH_REVOCATIONS=$REVOCATIONS BENCH_MEASURE=$MEASURE BENCH_STREAM_CLIENTS=$STREAM_CLIENTS BENCH_MEMORY_SESSIONS=$MEMORY_SESSIONS BENCH_MEMORY_REVOKED=$MEMORY_REVOKED hack/bench-revocation.sh\`:"
    echo
    cat "$2"
  } > "$WORK/report-$1.md"
  hack/bench-report.sh "$1" "$WORK/report-$1.md"
}
if [ "$status" = 0 ] && [ "${BENCH_NO_REPORT:-0}" != 1 ]; then
  awk '/^memory: /{m=1} !m' "$WORK/results.md" > "$WORK/propagation.md"
  awk '/^memory: /{m=1} m' "$WORK/results.md" > "$WORK/memory.md"
  case ",$REPORT," in *,propagation,*) report bench-revocation "$WORK/propagation.md" ;; esac
  case ",$REPORT," in *,memory,*)
    if [ -s "$WORK/memory.md" ]; then
      report bench-revocation-memory "$WORK/memory.md"
    else
      log "BENCH_REPORT names memory, but the memory part did not run"
      status=1
    fi ;;
  esac
fi
if [ "$status" = 0 ] && [ -z "${BENCH_DIR:-}" ]; then
  rm -rf "$WORK"
else
  log "logs kept in $WORK"
fi
exit "$status"

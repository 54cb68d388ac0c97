#!/usr/bin/env bash
# Load benchmark of the gateway's request path, everything on 127.0.0.1, one machine, one run:
#
#   direct       wrk -> hello-upstream                      (plain HTTP: no TLS, no gateway)
#   passthrough  wrk -> gateway (TLS) -> hello-upstream     host open.bench.test, Bypass rule
#                                                           for 127.0.0.0/8: no login, no identity
#   authorized   wrk -> gateway (TLS) -> hello-upstream     host app.bench.test, Allow
#                                                           @example.com, with alice's real
#                                                           session cookie from a Dex login
#
# The targets compare authorized with passthrough (both through the gateway, both over TLS),
# round by round, as the median over the rounds: requests/s >= 0.92x, p99 <= 1.10x, gateway
# CPU per request <= 1.08x. "direct" is the upstream's own ceiling on this machine and excludes
# TLS. The report goes into BENCHMARKS.md (hack/bench-report.sh; BENCH_NO_REPORT=1: not).
#
# Usage: hack/bench-load.sh            (about 6 minutes with the defaults below, after the build)
# Settings (environment): BENCH_DURATION=15s BENCH_WARMUP=5s BENCH_CONNECTIONS=32
#   BENCH_THREADS=1 (wrk threads) BENCH_ROUNDS=7 (each round runs the three targets once:
#   authorized and passthrough back to back, in alternating order) BENCH_PERF=1 (record the gateway with perf during the first authorized run;
#   report in $BENCH_DIR/perf-authorized.data) BENCH_DIR (working directory, default a
#   temporary one, kept when the run fails) BENCH_NO_BUILD=1 (run the release binaries already
#   built in $CARGO_TARGET_DIR instead of building the working tree).
# Needs: wrk (installed with apt-get when missing), Dex from hack/build-tools.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${BENCH_DURATION:-15s}
WARMUP=${BENCH_WARMUP:-5s}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
THREADS=${BENCH_THREADS:-1}
ROUNDS=${BENCH_ROUNDS:-7}
PERF=${BENCH_PERF:-0}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/bench}
WORK=${BENCH_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/portcullis-bench.XXXXXX")}
mkdir -p "$WORK"

log() { printf '[bench-load] %s\n' "$*" >&2; }

# --- tools -------------------------------------------------------------------------------------
if ! command -v wrk >/dev/null; then
  log "installing wrk"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get install -y wrk >/dev/null 2>&1 || {
    $SUDO apt-get update >/dev/null
    $SUDO apt-get install -y wrk >/dev/null
  }
fi
hack/build-tools.sh dex
eval "$(hack/tools-env.sh)"

if [ "${BENCH_NO_BUILD:-0}" = 1 ]; then
  log "BENCH_NO_BUILD=1: using the binaries already in $CARGO_TARGET_DIR/release"
else
  log "building release binaries into $CARGO_TARGET_DIR"
  cargo build --release --locked --quiet \
    -p portcullis-gateway --bin portcullis-gateway \
    -p portcullis-tests --bin hello-upstream --bin bench-setup
fi
BIN="$CARGO_TARGET_DIR/release"

# --- processes ---------------------------------------------------------------------------------
UPSTREAM_PID=
SETUP_PID=
stop_all() {
  local status=$?
  for pid in $SETUP_PID $UPSTREAM_PID; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in $SETUP_PID $UPSTREAM_PID; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [ "$status" = 0 ] && [ -z "${BENCH_DIR:-}" ] && [ "$PERF" != 1 ]; then
    rm -rf "$WORK"
  else
    log "logs kept in $WORK"
  fi
}
trap stop_all EXIT

"$BIN/hello-upstream" --listen 127.0.0.1:0 >"$WORK/upstream.addr" 2>"$WORK/upstream.log" &
UPSTREAM_PID=$!
for _ in $(seq 100); do [ -s "$WORK/upstream.addr" ] && break; sleep 0.1; done
UPSTREAM=$(head -n1 "$WORK/upstream.addr")
[ -n "$UPSTREAM" ] || { log "hello-upstream did not start"; cat "$WORK/upstream.log" >&2; exit 1; }
log "upstream on $UPSTREAM"

log "starting Dex and the gateway, logging alice in"
"$BIN/bench-setup" --gateway-bin "$BIN/portcullis-gateway" --upstream "$UPSTREAM" \
  --dir "$WORK/stack" --env-file "$WORK/bench.env" --gateway-log "warn,rustls=error" \
  2>"$WORK/bench-setup.log" &
SETUP_PID=$!
for _ in $(seq 1200); do
  [ -s "$WORK/bench.env" ] && break
  kill -0 "$SETUP_PID" 2>/dev/null || { cat "$WORK/bench-setup.log" >&2; exit 1; }
  sleep 0.1
done
[ -s "$WORK/bench.env" ] || { log "bench-setup not ready after 120s"; cat "$WORK/bench-setup.log" >&2; exit 1; }
# shellcheck disable=SC1091
. "$WORK/bench.env"
GATEWAY="https://127.0.0.1:$GATEWAY_PORT/"
log "gateway on $GATEWAY (pid $GATEWAY_PID), session cookie ${APP_COOKIE%%=*}=<${#APP_COOKIE} bytes>"

# --- load --------------------------------------------------------------------------------------
# wrk_target NAME DURATION OUT: one wrk run against target NAME.
wrk_target() {
  local name=$1 duration=$2 out=$3
  local args=(-t"$THREADS" -c"$CONNECTIONS" -d"$duration" --timeout 5s --latency)
  case $name in
    direct) wrk "${args[@]}" "http://$UPSTREAM/" >"$out" ;;
    passthrough) wrk "${args[@]}" -H "Host: $OPEN_HOST:$GATEWAY_PORT" "$GATEWAY" >"$out" ;;
    authorized)
      wrk "${args[@]}" -H "Host: $APP_HOST:$GATEWAY_PORT" -H "Cookie: $APP_COOKIE" "$GATEWAY" >"$out"
      ;;
  esac
}

# check_outcomes: how many checks the gateway decided, by outcome (from its metrics).
check_outcomes() {
  curl -fsS "http://127.0.0.1:$GATEWAY_OPS_PORT/metrics" |
    awk '/^portcullis_gateway_checks_total/ { match($0, /outcome="[a-z_]+"/); o = substr($0, RSTART + 9, RLENGTH - 10); n[o] = $2 }
         /^portcullis_gateway_token_rejections_total/ { r += $2 }
         END { printf "allow=%d other=%d rejected=%d\n", n["allow"], n["login"] + n["deny"] + n["no_policy"], r }'
}

# cpu_ticks PID: user + system CPU time the process has used, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

# parse OUT: "p50_ms p99_ms rps requests errors" from wrk's output.
parse() {
  awk '
    function ms(v) {
      if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
      if (v ~ /ms$/) return substr(v, 1, length(v) - 2)
      if (v ~ /s$/) return substr(v, 1, length(v) - 1) * 1000
      return v
    }
    $1 == "50%" { p50 = ms($2) }
    $1 == "99%" { p99 = ms($2) }
    /^Requests\/sec:/ { rps = $2 }
    / requests in / { reqs = $1 }
    /Non-2xx or 3xx responses:/ { errors += $NF }
    /Socket errors:/ { gsub(/,/, ""); errors += $4 + $6 + $8 + $10 }
    END { printf "%.3f %.3f %.0f %d %d\n", p50, p99, rps, reqs, errors + 0 }
  ' "$1"
}

TARGETS=(direct passthrough authorized)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "warm-up: $WARMUP per target"
for t in "${TARGETS[@]}"; do wrk_target "$t" "$WARMUP" "$WORK/warmup-$t.txt"; done

RESULTS="$WORK/results.txt"
: >"$RESULTS"
for round in $(seq "$ROUNDS"); do
  # Authorized and passthrough run back to back, so that their ratio is not taken across a
  # drift of the machine's speed; which of them goes first alternates, and so does whether
  # the direct run comes before or after the pair.
  if [ $((round % 2)) = 1 ]; then order=(direct passthrough authorized); else order=(authorized passthrough direct); fi
  for t in "${order[@]}"; do
    log "round $round/$ROUNDS: $t ($DURATION, $CONNECTIONS connections, $THREADS wrk thread(s))"
    out="$WORK/round$round-$t.txt"
    before=$(check_outcomes)
    gw0=$(cpu_ticks "$GATEWAY_PID")
    up0=$(cpu_ticks "$UPSTREAM_PID")
    perf_pid=
    if [ "$PERF" = 1 ] && [ "$t" = authorized ] && [ "$round" = 1 ] && command -v perf >/dev/null; then
      perf record -F 499 -g -p "$GATEWAY_PID" -o "$WORK/perf-authorized.data" >/dev/null 2>&1 &
      perf_pid=$!
    fi
    wrk_target "$t" "$DURATION" "$out"
    [ -n "$perf_pid" ] && { kill -INT "$perf_pid"; wait "$perf_pid" || true; }
    gw1=$(cpu_ticks "$GATEWAY_PID")
    up1=$(cpu_ticks "$UPSTREAM_PID")
    after=$(check_outcomes)
    read -r p50 p99 rps reqs errors < <(parse "$out")
    # CPU time per request (microseconds) of the gateway and of the upstream.
    gw_us=$(awk -v t=$((gw1 - gw0)) -v hz="$HZ" -v n="$reqs" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
    up_us=$(awk -v t=$((up1 - up0)) -v hz="$HZ" -v n="$reqs" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
    # Every request the gateway saw must have been let through: a 302 to the login page would
    # count as a success for wrk.
    if [ "$t" != direct ]; then
      b_other=$(sed -E 's/.*other=([0-9]+).*/\1/' <<<"$before")
      a_other=$(sed -E 's/.*other=([0-9]+).*/\1/' <<<"$after")
      b_rej=$(sed -E 's/.*rejected=([0-9]+).*/\1/' <<<"$before")
      a_rej=$(sed -E 's/.*rejected=([0-9]+).*/\1/' <<<"$after")
      errors=$((errors + a_other - b_other + a_rej - b_rej))
    fi
    echo "$round $t $p50 $p99 $rps $reqs $errors $gw_us $up_us" >>"$RESULTS"
    [ "$errors" = 0 ] || log "WARNING: $t had $errors failed or refused requests (see $out)"
  done
done

# --- report ------------------------------------------------------------------------------------
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
{
  echo "Measured $(date -u +%Y-%m-%d) at commit \`$(git rev-parse --short HEAD)\`$(git diff --quiet HEAD -- . ':(exclude)BENCHMARKS.md' 2>/dev/null || echo ' (with uncommitted changes)'),"
  echo "$(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), load average (1/5/15 min) $LOAD_BEFORE before and $LOAD_AFTER after;"
  echo "\`BENCH_DURATION=$DURATION BENCH_WARMUP=$WARMUP BENCH_CONNECTIONS=$CONNECTIONS BENCH_THREADS=$THREADS BENCH_ROUNDS=$ROUNDS hack/bench-load.sh\`"
  echo "(wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency; errors include every request the gateway did not allow)."
  echo
  echo "Authorized against passthrough, round by round (each round runs both, back to back), and the median over the rounds:"
  echo
  echo "| round | requests/s (target >= 0.92) | p99 (target <= 1.10) | gateway CPU per request (target <= 1.08) |"
  echo "|---|---:|---:|---:|"
  awk '
    function median(a, n,   i, j, x) {
      for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    { p99[$1, $2] = $4; rps[$1, $2] = $5; cpu[$1, $2] = $8; if ($1 > n) n = $1 }
    function verdict(v, ok) { return sprintf("%.3f %s", v, ok ? "met" : "MISSED") }
    END {
      for (r = 1; r <= n; r++) {
        t[r] = rps[r, "authorized"] / rps[r, "passthrough"]
        l[r] = p99[r, "authorized"] / p99[r, "passthrough"]
        c[r] = cpu[r, "authorized"] / cpu[r, "passthrough"]
        printf "| %d | %.3f | %.3f | %.3f |\n", r, t[r], l[r], c[r]
      }
      mt = median(t, n); ml = median(l, n); mc = median(c, n)
      printf "| **median** | **%s** | **%s** | **%s** |\n", verdict(mt, mt >= 0.92), verdict(ml, ml <= 1.10), verdict(mc, mc <= 1.08)
    }' "$RESULTS"
  echo
  echo "Median over the rounds, per target:"
  echo
  echo "| target | requests/s | p50 (ms) | p99 (ms) | gateway CPU µs/req | upstream CPU µs/req | errors (all rounds) |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  BENCH_NO_CPU=direct hack/bench-medians.sh "$RESULTS" "${TARGETS[@]}"
  echo
  echo "<details><summary>Every run</summary>"
  echo
  echo "| round | target | p50 (ms) | p99 (ms) | requests/s | requests | errors | gateway CPU µs/req | upstream CPU µs/req |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
  awk '{ printf "| %s | %s | %.3f | %.3f | %d | %d | %d | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, ($2 == "direct" ? "–" : $8), $9 }' "$RESULTS"
  echo
  echo "</details>"
} >"$WORK/report.md"
echo
cat "$WORK/report.md"
if [ "$PERF" = 1 ] && [ -f "$WORK/perf-authorized.data" ]; then
  echo
  echo "perf profile of the gateway (first authorized run): perf report -i $WORK/perf-authorized.data"
fi
# An error in any run fails the benchmark (and nothing is written into BENCHMARKS.md).
if awk '$7 != 0 { bad = 1 } END { exit !bad }' "$RESULTS"; then
  log "some runs had errors: no report"
  exit 1
fi
if [ "${BENCH_NO_REPORT:-0}" != 1 ]; then
  hack/bench-report.sh bench-load "$WORK/report.md"
fi

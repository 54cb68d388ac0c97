#!/usr/bin/env bash
# Peer benchmark: the gateway against oauth2-proxy (stock, built from its Go module at the
# version hack/build-tools.sh pins), everything on 127.0.0.1, one machine, one Dex, one
# hello-upstream, every listener TLS with a certificate of the same test CA.
#
# Reverse-proxy mode (wrk -> TLS -> proxy -> hello-upstream):
#   ref-proxy        tests/src/bin/ref-proxy.rs: hyper + rustls, the gateway's TLS settings, no
#                    auth; the floor of "TLS in, proxy out" in Rust on this machine
#   passthrough      the gateway, host open.bench.test, Bypass rule (no identity)
#   portcullis       the gateway, host app.bench.test, alice's session cookie from a Dex login
#   oauth2-proxy     oauth2-proxy, its own session cookie from a login of alice through Dex
# auth_request mode (wrk -> TLS -> nginx -> hello-upstream, nginx asking the auth server over
# TLS, keep-alive to every upstream):
#   nginx            no auth
#   nginx+portcullis the gateway's /.portcullis/auth/nginx (docs/ingress/nginx.md contract)
#   nginx+oauth2-proxy oauth2-proxy's /oauth2/auth (with --set-xauthrequest, its documented
#                    nginx setup)
#
# Every response is checked by a wrk Lua script: anything but 2xx (a redirect to a login
# included) counts as an error, and a run with errors fails the benchmark. Rounds run the
# targets in a rotated order; the report gives, per target, the median requests/s and p99
# over the rounds, the CPU time per request of the processes behind it (from /proc), and the
# ratios of issue 16: Portcullis / oauth2-proxy requests/s (>= 3) and p99 (<= 0.5) in both
# modes, nginx+portcullis / nginx, and passthrough / ref-proxy.
#
# The results (tables, commit, machine, load) replace the section between the `bench-peers`
# markers of BENCHMARKS.md, unless BENCH_NO_REPORT=1.
#
# Usage: hack/bench-peers.sh
# Settings (environment): BENCH_DURATION=20s BENCH_WARMUP=5s BENCH_CONNECTIONS=32
#   BENCH_THREADS=1 (wrk threads) BENCH_ROUNDS=3 BENCH_DIR (working directory, default a
#   temporary one, kept when the run fails) BENCH_NO_BUILD=1 (run the release binaries already
#   built in $CARGO_TARGET_DIR).
# Needs: wrk and nginx's Debian package (wrk installed with apt-get when missing; nginx
# unpacked, not installed, by hack/build-tools.sh), Dex and oauth2-proxy from
# hack/build-tools.sh (oauth2-proxy is built only when asked for, here).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${BENCH_DURATION:-20s}
WARMUP=${BENCH_WARMUP:-5s}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
THREADS=${BENCH_THREADS:-1}
ROUNDS=${BENCH_ROUNDS:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/bench}
WORK=${BENCH_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/portcullis-peers.XXXXXX")}
mkdir -p "$WORK"

log() { printf '[bench-peers] %s\n' "$*" >&2; }

# --- tools -------------------------------------------------------------------------------------
if ! command -v wrk >/dev/null; then
  log "installing wrk"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get install -y wrk >/dev/null 2>&1 || {
    $SUDO apt-get update >/dev/null
    $SUDO apt-get install -y wrk >/dev/null
  }
fi
hack/build-tools.sh dex nginx oauth2-proxy
eval "$(hack/tools-env.sh)"
TOOLS_BIN="${PORTCULLIS_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/portcullis-tools}/bin"
OAUTH2_PROXY_VERSION=$(cat "$TOOLS_BIN/.oauth2-proxy.version")
NGINX_VERSION=$(cat "$TOOLS_BIN/.nginx.version")

if [ "${BENCH_NO_BUILD:-0}" = 1 ]; then
  log "BENCH_NO_BUILD=1: using the binaries already in $CARGO_TARGET_DIR/release"
else
  log "building release binaries into $CARGO_TARGET_DIR"
  cargo build --release --locked --quiet \
    -p portcullis-gateway --bin portcullis-gateway \
    -p portcullis-tests --bin hello-upstream --bin bench-setup --bin ref-proxy
fi
BIN="$CARGO_TARGET_DIR/release"

# --- processes ---------------------------------------------------------------------------------
UPSTREAM_PID=
SETUP_PID=
REF_PID=
NGINX_PID=
stop_all() {
  local status=$?
  for pid in $NGINX_PID $REF_PID $SETUP_PID $UPSTREAM_PID; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in $NGINX_PID $REF_PID $SETUP_PID $UPSTREAM_PID; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [ "$status" = 0 ] && [ -z "${BENCH_DIR:-}" ]; then
    rm -rf "$WORK"
  else
    log "logs kept in $WORK"
  fi
}
trap stop_all EXIT

# wait_addr FILE LOG WHAT: waits for the address a process prints on stdout.
wait_addr() {
  for _ in $(seq 100); do [ -s "$1" ] && break; sleep 0.1; done
  [ -s "$1" ] || { log "$3 did not start"; cat "$2" >&2; exit 1; }
  head -n1 "$1"
}

"$BIN/hello-upstream" --listen 127.0.0.1:0 >"$WORK/upstream.addr" 2>"$WORK/upstream.log" &
UPSTREAM_PID=$!
UPSTREAM=$(wait_addr "$WORK/upstream.addr" "$WORK/upstream.log" hello-upstream)
log "upstream on $UPSTREAM"

log "starting Dex, the gateway and oauth2-proxy, logging alice in to both"
"$BIN/bench-setup" --gateway-bin "$BIN/portcullis-gateway" --upstream "$UPSTREAM" \
  --dir "$WORK/stack" --env-file "$WORK/bench.env" --gateway-log "warn,rustls=error" \
  --oauth2-proxy-bin "$TOOLS_BIN/oauth2-proxy" --trusted-proxies 127.0.0.1/32 \
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
log "gateway on 127.0.0.1:$GATEWAY_PORT (pid $GATEWAY_PID), oauth2-proxy on 127.0.0.1:$OAUTH2_PROXY_PORT (pid $OAUTH2_PROXY_PID)"

"$BIN/ref-proxy" --upstream "$UPSTREAM" --tls-cert "$TLS_CERT" --tls-key "$TLS_KEY" \
  >"$WORK/ref-proxy.addr" 2>"$WORK/ref-proxy.log" &
REF_PID=$!
REF=$(wait_addr "$WORK/ref-proxy.addr" "$WORK/ref-proxy.log" ref-proxy)
log "ref-proxy on $REF"

# nginx: one process, three servers (no auth, the gateway, oauth2-proxy), the same TLS
# certificate as the gateway and ref-proxy, keep-alive connections to every upstream, TLS with
# verification to both auth servers.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
NGINX_PLAIN=$(free_port)
NGINX_PORTCULLIS=$(free_port)
NGINX_OAUTH2=$(free_port)
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<EOF
# Workers as the invoking user (the directive is ignored, with a notice, when not root).
user $(id -un) $(id -gn);
worker_processes auto;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  ssl_certificate $TLS_CERT;
  ssl_certificate_key $TLS_KEY;
  ssl_protocols TLSv1.2 TLSv1.3;
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_ssl_trusted_certificate $CA_FILE;
  proxy_ssl_verify on;
  proxy_ssl_name localhost;
  upstream hello { server $UPSTREAM; keepalive 64; }
  upstream portcullis { server 127.0.0.1:$GATEWAY_PORT; keepalive 64; }
  upstream oauth2proxy { server 127.0.0.1:$OAUTH2_PROXY_PORT; keepalive 64; }

  server {
    listen 127.0.0.1:$NGINX_PLAIN ssl;
    location / { proxy_pass http://hello; }
  }

  server {
    listen 127.0.0.1:$NGINX_PORTCULLIS ssl;
    location = /.portcullis-check {
      internal;
      proxy_pass https://portcullis/.portcullis/auth/nginx;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header Connection "";
      proxy_set_header X-Original-URL https://\$http_host\$request_uri;
      proxy_set_header X-Original-Method \$request_method;
    }
    location / {
      auth_request /.portcullis-check;
      auth_request_set \$portcullis_user \$upstream_http_x_auth_request_user;
      auth_request_set \$portcullis_email \$upstream_http_x_auth_request_email;
      auth_request_set \$portcullis_groups \$upstream_http_x_auth_request_groups;
      auth_request_set \$portcullis_assertion \$upstream_http_portcullis_jwt_assertion;
      proxy_set_header X-Auth-Request-User \$portcullis_user;
      proxy_set_header X-Auth-Request-Email \$portcullis_email;
      proxy_set_header X-Auth-Request-Groups \$portcullis_groups;
      proxy_set_header Portcullis-Jwt-Assertion \$portcullis_assertion;
      auth_request_set \$portcullis_cookie \$upstream_http_set_cookie;
      add_header Set-Cookie \$portcullis_cookie always;
      proxy_pass http://hello;
    }
  }

  server {
    listen 127.0.0.1:$NGINX_OAUTH2 ssl;
    location = /oauth2/auth {
      internal;
      proxy_pass https://oauth2proxy;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Original-URI \$request_uri;
    }
    location / {
      auth_request /oauth2/auth;
      auth_request_set \$user \$upstream_http_x_auth_request_user;
      auth_request_set \$email \$upstream_http_x_auth_request_email;
      proxy_set_header X-User \$user;
      proxy_set_header X-Email \$email;
      auth_request_set \$auth_cookie \$upstream_http_set_cookie;
      add_header Set-Cookie \$auth_cookie;
      proxy_pass http://hello;
    }
  }
}
EOF
"$TOOLS_BIN/nginx" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" \
  >"$WORK/nginx/stdout.log" 2>&1 &
NGINX_PID=$!
for _ in $(seq 100); do
  curl -fsS --cacert "$CA_FILE" -o /dev/null "https://127.0.0.1:$NGINX_PLAIN/" 2>/dev/null && break
  sleep 0.1
done
log "nginx $NGINX_VERSION on ports $NGINX_PLAIN (no auth), $NGINX_PORTCULLIS (Portcullis), $NGINX_OAUTH2 (oauth2-proxy)"

# --- the targets -------------------------------------------------------------------------------
TARGETS=(ref-proxy passthrough portcullis oauth2-proxy nginx nginx+portcullis nginx+oauth2-proxy)

# target_args NAME: the URL and headers of target NAME, one per line.
target_args() {
  case $1 in
    ref-proxy) echo "https://$REF/" ;;
    passthrough) printf '%s\n' -H "Host: $OPEN_HOST:$GATEWAY_PORT" "https://127.0.0.1:$GATEWAY_PORT/" ;;
    portcullis) printf '%s\n' -H "Host: $APP_HOST:$GATEWAY_PORT" -H "Cookie: $APP_COOKIE" "https://127.0.0.1:$GATEWAY_PORT/" ;;
    oauth2-proxy) printf '%s\n' -H "Cookie: $OAUTH2_PROXY_COOKIE" "https://127.0.0.1:$OAUTH2_PROXY_PORT/" ;;
    nginx) echo "https://127.0.0.1:$NGINX_PLAIN/" ;;
    # X-Original-URL names the app host at the gateway's port, where alice's token is valid.
    nginx+portcullis) printf '%s\n' -H "Host: $APP_HOST:$GATEWAY_PORT" -H "Cookie: $APP_COOKIE" "https://127.0.0.1:$NGINX_PORTCULLIS/" ;;
    nginx+oauth2-proxy) printf '%s\n' -H "Cookie: $OAUTH2_PROXY_COOKIE" "https://127.0.0.1:$NGINX_OAUTH2/" ;;
  esac
}

# target_pids NAME: the processes doing the proxy's work for target NAME (nginx: its master and
# workers).
nginx_pids() { echo "$NGINX_PID $(cat "/proc/$NGINX_PID/task/"*/children 2>/dev/null)"; }
target_pids() {
  case $1 in
    ref-proxy) echo "$REF_PID" ;;
    passthrough | portcullis) echo "$GATEWAY_PID" ;;
    oauth2-proxy) echo "$OAUTH2_PROXY_PID" ;;
    nginx) nginx_pids ;;
    nginx+portcullis) echo "$(nginx_pids) $GATEWAY_PID" ;;
    nginx+oauth2-proxy) echo "$(nginx_pids) $OAUTH2_PROXY_PID" ;;
  esac
}

# Every response with a status outside 2xx is counted (wrk itself counts only >= 400).
cat >"$WORK/count.lua" <<'EOF'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) non2xx = 0 end
function response(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
end
function done(summary, latency, requests)
  local n = 0
  for _, t in ipairs(threads) do n = n + t:get("non2xx") end
  io.write(string.format("Non-2xx (lua): %d\n", n))
end
EOF

# Each target answers 200 with the upstream's body before any load.
for t in "${TARGETS[@]}"; do
  mapfile -t args < <(target_args "$t")
  url=${args[-1]}
  curl_args=(-sS --cacert "$CA_FILE" -o "$WORK/check-$t.body" -w '%{http_code}')
  for ((i = 0; i + 1 < ${#args[@]}; i += 2)); do curl_args+=(-H "${args[i + 1]}"); done
  code=$(curl "${curl_args[@]}" "$url" || true)
  body=$(cat "$WORK/check-$t.body" 2>/dev/null || true)
  if [ "$code" != 200 ] || [ "$body" != "Hello, world!" ]; then
    log "$t answered $code: $body (nginx log: $WORK/nginx/error.log)"
    exit 1
  fi
done
log "every target answers 200 with the upstream's body"

wrk_target() {
  local name=$1 duration=$2 out=$3
  mapfile -t args < <(target_args "$name")
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$duration" --timeout 5s --latency -s "$WORK/count.lua" \
    "${args[@]}" >"$out"
}

cpu_ticks() {
  local sum=0 pid
  for pid in "$@"; do sum=$((sum + $(awk '{ print $14 + $15 }' "/proc/$pid/stat"))); done
  echo "$sum"
}
HZ=$(getconf CLK_TCK)

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
    /^Non-2xx \(lua\):/ { errors += $NF }
    /Socket errors:/ { gsub(/,/, ""); errors += $4 + $6 + $8 + $10 }
    END { printf "%.3f %.3f %.0f %d %d\n", p50, p99, rps, reqs, errors + 0 }
  ' "$1"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "warm-up: $WARMUP per target"
for t in "${TARGETS[@]}"; do wrk_target "$t" "$WARMUP" "$WORK/warmup-$t.txt"; done

RESULTS="$WORK/results.txt"
: >"$RESULTS"
n=${#TARGETS[@]}
for round in $(seq "$ROUNDS"); do
  shift_by=$(((round - 1) % n))
  order=("${TARGETS[@]:shift_by}" "${TARGETS[@]:0:shift_by}")
  for t in "${order[@]}"; do
    log "round $round/$ROUNDS: $t ($DURATION, $CONNECTIONS connections, $THREADS wrk thread(s))"
    out="$WORK/round$round-$t.txt"
    read -r -a pids <<<"$(target_pids "$t")"
    c0=$(cpu_ticks "${pids[@]}")
    u0=$(cpu_ticks "$UPSTREAM_PID")
    wrk_target "$t" "$DURATION" "$out"
    c1=$(cpu_ticks "${pids[@]}")
    u1=$(cpu_ticks "$UPSTREAM_PID")
    read -r p50 p99 rps reqs errors < <(parse "$out")
    cpu_us=$(awk -v t=$((c1 - c0)) -v hz="$HZ" -v n="$reqs" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
    up_us=$(awk -v t=$((u1 - u0)) -v hz="$HZ" -v n="$reqs" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
    echo "$round $t $p50 $p99 $rps $reqs $errors $cpu_us $up_us" >>"$RESULTS"
    [ "$errors" = 0 ] || log "ERROR: $t had $errors non-2xx or failed requests (see $out)"
  done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report ------------------------------------------------------------------------------------
{
  echo "Measured $(date -u +%Y-%m-%d) at commit \`$(git rev-parse --short HEAD)\`$(git diff --quiet HEAD -- . ':(exclude)BENCHMARKS.md' 2>/dev/null || echo ' (with uncommitted changes)'),"
  echo "$(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), load average (1/5/15 min) $LOAD_BEFORE before and $LOAD_AFTER after;"
  echo "oauth2-proxy $OAUTH2_PROXY_VERSION (stock, from its module), nginx $NGINX_VERSION (Debian);"
  echo "\`BENCH_DURATION=$DURATION BENCH_WARMUP=$WARMUP BENCH_CONNECTIONS=$CONNECTIONS BENCH_THREADS=$THREADS BENCH_ROUNDS=$ROUNDS hack/bench-peers.sh\`"
  echo "(wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, a Lua script counting every non-2xx response)."
  echo
  echo "Median over the rounds (CPU: the proxy's processes, for the nginx targets nginx's plus the auth server's, per request):"
  echo
  echo "| target | requests/s | p50 (ms) | p99 (ms) | proxy CPU µs/req | upstream CPU µs/req | errors (all rounds) |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  hack/bench-medians.sh "$RESULTS" "${TARGETS[@]}" >"$WORK/medians.md"
  cat "$WORK/medians.md"
  echo
  echo "| ratio (medians) | value | bar |"
  echo "|---|---:|---|"
  awk -F'|' '
    { gsub(/ /, "", $2); rps[$2] = $3 + 0; p99[$2] = $5 + 0; cpu[$2] = $6 + 0 }
    function r(label, v, bar, ok) { printf "| %s | %.2f | %s |\n", label, v, bar == "" ? "–" : bar (ok ? " met" : " MISSED") }
    END {
      v = rps["portcullis"] / rps["oauth2-proxy"]; r("reverse proxy: Portcullis / oauth2-proxy requests/s", v, ">= 3", v >= 3)
      v = p99["portcullis"] / p99["oauth2-proxy"]; r("reverse proxy: Portcullis / oauth2-proxy p99", v, "<= 0.5", v <= 0.5)
      v = rps["nginx+portcullis"] / rps["nginx+oauth2-proxy"]; r("auth_request: nginx+Portcullis / nginx+oauth2-proxy requests/s", v, ">= 3", v >= 3)
      v = p99["nginx+portcullis"] / p99["nginx+oauth2-proxy"]; r("auth_request: nginx+Portcullis / nginx+oauth2-proxy p99", v, "<= 0.5", v <= 0.5)
      r("auth_request: nginx+Portcullis / nginx requests/s", rps["nginx+portcullis"] / rps["nginx"], "", 0)
      r("passthrough / ref-proxy requests/s", rps["passthrough"] / rps["ref-proxy"], "", 0)
      r("passthrough / ref-proxy CPU per request", cpu["passthrough"] / cpu["ref-proxy"], "", 0)
      r("Portcullis (authorized) / ref-proxy CPU per request", cpu["portcullis"] / cpu["ref-proxy"], "", 0)
    }' "$WORK/medians.md"
  echo
  echo "<details><summary>Every run</summary>"
  echo
  echo "| round | target | requests/s | p50 (ms) | p99 (ms) | requests | errors | proxy CPU µs/req |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|"
  awk '{ printf "| %s | %s | %d | %.3f | %.3f | %d | %d | %s |\n", $1, $2, $5, $3, $4, $6, $7, $8 }' "$RESULTS"
  echo
  echo "</details>"
} >"$WORK/report.md"
echo
cat "$WORK/report.md"

# An error in any run fails the benchmark (and nothing is written into BENCHMARKS.md).
if awk '$7 != 0 { bad = 1 } END { exit !bad }' "$RESULTS"; then
  log "some runs had non-2xx responses or socket errors: no report"
  exit 1
fi
if [ "${BENCH_NO_REPORT:-0}" != 1 ]; then
  hack/bench-report.sh bench-peers "$WORK/report.md"
fi

#!/usr/bin/env bash
# Runs the fuzz targets of fuzz/ for a bounded time each (FUZZ_SECONDS, default 60), the path
# and forward-auth targets seeded with the payload list core/tests/vectors/path-traversal.txt.
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Names of targets may
# be given as arguments; by default every target runs. Crashes land in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-60}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
seed() {
  local corpus=$1 prefix=$2
  while IFS= read -r payload; do
    case "$payload" in '' | '# '*) continue ;; esac
    for value in "/public/${payload}admin" "/${payload}admin" "${prefix}/public/${payload}"; do
      printf '%s' "$value" > "$corpus/seed-$(printf '%s' "$value" | sha256sum | cut -c1-16)"
    done
  done < ../core/tests/vectors/path-traversal.txt
}
# A stream as the operator writes it: one frame of each kind, a line each.
seed_frames() {
  cat > "$1/seed-stream" <<'FRAMES'
{"type":"snapshot","instance":"op-1","version":2,"policies":[],"secrets":[{"namespace":"team","name":"ci","data":{"client-id":"ci-robot"}}],"sessions":[]}
{"type":"policy","version":3,"policy":{"namespace":"team","name":"apps","uid":"u-2","generation":1,"epochRaisedAt":0,"spec":{"hosts":["a.example.test"],"identityProviders":["dex"],"rules":[{"action":"Allow","include":[{"everyone":true}]}]}}}
{"type":"session","version":4,"session":{"sid":"s1","subject":"u1","expiresAt":1800003600,"ended":false,"email":"a@example.com","groups":["staff"]}}
{"type":"session","version":5,"session":{"sid":"s1","subject":"u1","expiresAt":1800003600,"ended":true,"refreshFailingSince":1800000100}}
{"type":"secretRemoved","version":6,"namespace":"team","name":"ci"}
{"type":"policyRemoved","version":7,"namespace":"team","name":"apps","uid":"u-2","withdrawn":true}
{"type":"heartbeat","version":7,"sentAt":1800000200}
FRAMES
}

for target in "${targets[@]}"; do
  features=()
  case "$target" in
    path | host | email_and_claims | token | stream_frames) ;;
    *) features=(--features gateway) ;;
  esac
  corpus="corpus/$target"
  mkdir -p "$corpus"
  case "$target" in
    path) seed "$corpus" "" ;;
    forward_auth_uri) seed "$corpus" "https://app.example.test" ;;
    stream_frames) seed_frames "$corpus" ;;
  esac
  echo "=== $target (${seconds}s)"
  cargo +nightly fuzz run "${features[@]}" -O "$target" "$corpus" -- \
    -max_total_time="$seconds" -print_final_stats=1
done

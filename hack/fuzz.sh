#!/usr/bin/env bash
# Runs the fuzz targets of fuzz/ for a bounded time each (FUZZ_SECONDS, default 60), the path
# and forward-auth targets seeded with the payload list core/tests/vectors/path-traversal.txt.
# Needs the nightly toolchain (the machine image has it); installs cargo-fuzz from crates.io
# when missing. Names of targets may be given as arguments; by default every target runs.
# Crashes land in fuzz/artifacts/<target>/ and make the script fail.
#
#   hack/fuzz.sh --build-only   builds every target and runs none (hack/test.sh starts this in
#                               the background while the integration tests run)
#   FUZZ_SANITIZER=none         no AddressSanitizer (CI's short runs; default: address)
#
# The build lives outside the checkout (PORTCULLIS_FUZZ_TARGET_DIR, default
# ~/.cache/portcullis-fuzz/target), so a second run on the same machine builds only what changed.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-60}"
sanitizer="${FUZZ_SANITIZER:-address}"
export CARGO_TARGET_DIR="${PORTCULLIS_FUZZ_TARGET_DIR:-$HOME/.cache/portcullis-fuzz/target}"
build_only=false
if [ "${1:-}" = "--build-only" ]; then
  build_only=true
  shift
fi

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "hack/fuzz.sh: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "hack/fuzz.sh: installing cargo-fuzz from crates.io"
  cargo install --locked --quiet cargo-fuzz --version 0.13.2
fi

# One build for every target: the gateway's parsers need the gateway linked in, and the same
# flags for build and run mean a run never rebuilds.
flags=(-O -s "$sanitizer" --features gateway)
if $build_only; then
  cargo +nightly fuzz build "${flags[@]}"
  exit 0
fi

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

failed=()
for target in "${targets[@]}"; do
  corpus="corpus/$target"
  mkdir -p "$corpus"
  case "$target" in
    path) seed "$corpus" "" ;;
    forward_auth_uri) seed "$corpus" "https://app.example.test" ;;
    stream_frames) seed_frames "$corpus" ;;
  esac
  echo "=== $target (${seconds}s, sanitizer $sanitizer)"
  if ! cargo +nightly fuzz run "${flags[@]}" "$target" "$corpus" -- \
    -max_total_time="$seconds" -print_final_stats=1; then
    failed+=("$target")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "hack/fuzz.sh: crashes in ${failed[*]} (inputs under fuzz/artifacts/)" >&2
  exit 1
fi

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
for target in "${targets[@]}"; do
  features=()
  case "$target" in
    path | host | email_and_claims | token) ;;
    *) features=(--features gateway) ;;
  esac
  corpus="corpus/$target"
  mkdir -p "$corpus"
  case "$target" in
    path) seed "$corpus" "" ;;
    forward_auth_uri) seed "$corpus" "https://app.example.test" ;;
  esac
  echo "=== $target (${seconds}s)"
  cargo +nightly fuzz run "${features[@]}" -O "$target" "$corpus" -- \
    -max_total_time="$seconds" -print_final_stats=1
done

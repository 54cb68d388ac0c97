#!/usr/bin/env bash
# Replaces the section of BENCHMARKS.md between `<!-- NAME:begin -->` and `<!-- NAME:end -->`
# with the contents of FILE: how the benchmark scripts report their own results, so no number
# in BENCHMARKS.md is copied by hand.
#
# Usage: hack/bench-report.sh NAME FILE
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1
file=$2
begin="<!-- $name:begin -->"
end="<!-- $name:end -->"
grep -qxF "$begin" BENCHMARKS.md && grep -qxF "$end" BENCHMARKS.md || {
  echo "bench-report: BENCHMARKS.md has no $begin ... $end section" >&2
  exit 1
}
tmp=$(mktemp)
awk -v begin="$begin" -v end="$end" -v file="$file" '
  $0 == begin { print; while ((getline line < file) > 0) print line; skip = 1; next }
  $0 == end { skip = 0 }
  !skip { print }
' BENCHMARKS.md > "$tmp"
mv "$tmp" BENCHMARKS.md
echo "bench-report: wrote the $name results into BENCHMARKS.md" >&2

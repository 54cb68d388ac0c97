#!/usr/bin/env bash
# Prints, for each TARGET, one Markdown table row of the medians over the rounds in RESULTS, a
# file of lines "round target p50_ms p99_ms requests/s requests errors cpu_us upstream_cpu_us"
# as hack/bench-load.sh and hack/bench-peers.sh write them: requests/s, p50, p99, CPU and
# upstream CPU per request, and the errors of all rounds. The CPU of a target named in
# BENCH_NO_CPU (space-separated) is printed as "–": nothing of it was measured.
#
# Usage: hack/bench-medians.sh RESULTS TARGET...
set -euo pipefail
results=$1
shift
for t in "$@"; do
  no_cpu=0
  case " ${BENCH_NO_CPU:-} " in *" $t "*) no_cpu=1 ;; esac
  awk -v t="$t" -v no_cpu="$no_cpu" '
    function median(a, n,   i, j, x) {
      for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    $2 == t { n++; rps[n] = $5; p50[n] = $3; p99[n] = $4; cpu[n] = $8; up[n] = $9; err += $7 }
    END {
      cpu_cell = no_cpu ? "–" : sprintf("%.1f", median(cpu, n))
      printf "| %s | %d | %.3f | %.3f | %s | %.1f | %d |\n", t, median(rps, n), median(p50, n), median(p99, n), cpu_cell, median(up, n), err
    }' "$results"
done

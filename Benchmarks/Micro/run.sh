#!/usr/bin/env bash
# Portcullis micro benchmarks (package-benchmark). See README.md.
#
#   ./run.sh ci                 short run (~0.4 s per benchmark), checks malloc thresholds; CI calls this
#   ./run.sh full               long run (up to 5 s per benchmark), prints the table, checks thresholds too
#   ./run.sh update-thresholds  re-record Thresholds/*.p90.json (mallocCountTotal only), to commit
#
# Exit status: 0 when every gated metric equals its stored threshold (within the tolerance in the code),
# 1 on a build or benchmark failure, 2 on a regression. An improvement (fewer mallocs than stored) passes
# with a notice: re-record the thresholds so the gain is locked in.
set -euo pipefail
cd "$(dirname "$0")"

mode=${1:-ci}
shift || true
started=$SECONDS

case "$mode" in
  ci|full)
    export PORTCULLIS_BENCH_MODE=$mode
    # 1. The report: every metric (wall clock, throughput, mallocs) as a table. Never gated.
    swift package benchmark run --no-progress "$@"
    # 2. The gate: a second run compared with Thresholds/ on the metrics stored there (mallocCountTotal only).
    #    `thresholds check` prints only deviations, hence the separate run above.
    #    `swift package` turns the tool's exit codes (2 worse, 4 better) into 1, so the verdict is read from
    #    the tool's own summary line.
    log=$(mktemp)
    trap 'rm -f "$log"' EXIT
    set +e
    swift package benchmark thresholds check --no-progress "$@" 2>&1 | tee "$log"
    status=${PIPESTATUS[0]}
    set -e
    if grep -q "is WORSE than the defined thresholds" "$log"; then
      status=2
    elif grep -q "is BETTER than the defined thresholds" "$log"; then
      status=4
    elif [ "$status" -eq 0 ] && ! grep -q "is EQUAL to the defined thresholds" "$log"; then
      status=1  # no verdict at all: treat as a failure rather than a silent pass
    fi
    ;;
  update-thresholds)
    export PORTCULLIS_BENCH_MODE=ci
    # --metric limits the recorded files to the deterministic metric; wall clock is never stored or gated.
    swift package --allow-writing-to-package-directory benchmark thresholds update \
      --metric mallocCountTotal --no-progress "$@"
    status=$?
    ;;
  *)
    echo "usage: $0 ci|full|update-thresholds [extra swift package benchmark options]" >&2
    exit 64
    ;;
esac

elapsed=$((SECONDS - started))
case "$status" in
  0) echo "micro benchmarks ($mode): OK in ${elapsed}s" ;;
  4) echo "micro benchmarks ($mode): OK in ${elapsed}s, with IMPROVEMENTS: fewer mallocs than Thresholds/ records;" \
          "run '$0 update-thresholds' and commit Thresholds/"
     status=0 ;;
  2) echo "micro benchmarks ($mode): REGRESSION after ${elapsed}s: more mallocs than Thresholds/ allows (see above)" ;;
  *) echo "micro benchmarks ($mode): FAILED (exit $status) after ${elapsed}s" ;;
esac
exit "$status"

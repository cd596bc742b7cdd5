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
    set +e
    # thresholds check = run every benchmark (the table, wall clock included, is printed) and compare the
    # metrics present in Thresholds/ (only mallocCountTotal) against the stored p90 values.
    swift package benchmark thresholds check --no-progress "$@"
    status=$?
    set -e
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

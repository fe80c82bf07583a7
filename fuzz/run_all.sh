#!/usr/bin/env bash
# fuzz/run_all.sh [SECONDS] — runs every fuzz target for SECONDS (default 300)
# each, one after another, starting from the seed corpora in fuzz/corpus and
# growing a working corpus in ${FUZZ_WORK:-/tmp/srmae-fuzz}/<target>. Prints
# one summary line per target (executions, coverage, corpus size); crashes
# land in fuzz/artifacts/<target>/ and stop that target.
# Needs: rustup nightly, cargo install cargo-fuzz.
set -uo pipefail
cd "$(dirname "$0")"
SECS=${1:-300}
WORK=${FUZZ_WORK:-/tmp/srmae-fuzz}
TARGETS=${TARGETS:-$(cargo +nightly fuzz list)}
status=0
for t in $TARGETS; do
  mkdir -p "$WORK/$t"
  log="$WORK/$t.log"
  cargo +nightly fuzz run -O "$t" "$WORK/$t" "corpus/$t" -- -max_total_time="$SECS" -rss_limit_mb=2048 -timeout=10 > "$log" 2>&1
  rc=$?
  last=$(grep -E "^#[0-9]+" "$log" | tail -1)
  echo "$t rc=$rc ${last:-no progress line} corpus=$(ls "$WORK/$t" | wc -l)"
  [ $rc -eq 0 ] || { status=1; grep -E "panicked|ERROR|SUMMARY|artifact" "$log" | head -5; }
done
exit $status

#!/usr/bin/env bash
# SRMAE vs MAE vs no pretraining on the photo corpus at 32x32 (docs/RESULTS.md):
#   bench/photo_results.sh [OUT]      (default OUT=runs/results-photos; see bench/mim_results.sh)
TASK=photos32 exec "$(dirname "$0")/mim_results.sh" "$@"

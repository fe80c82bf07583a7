#!/usr/bin/env bash
# SRMAE vs MAE vs no pretraining on Fashion-MNIST (docs/RESULTS.md):
#   bench/fmnist_results.sh [OUT]     (default OUT=runs/results; see bench/mim_results.sh)
TASK=fmnist exec "$(dirname "$0")/mim_results.sh" "$@"

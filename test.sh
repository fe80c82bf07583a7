#!/usr/bin/env bash
# Runs srmae's whole test suite (unit, property and end-to-end tests),
# installing what the tests need first.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
cargo build --workspace --locked --bins
cargo test --workspace --locked "$@"

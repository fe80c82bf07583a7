#!/usr/bin/env bash
# Runs srmae's whole test suite (unit, property and end-to-end tests, and
# the Python wheel's pytest suite),
# installing what the tests need first.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
cargo build --workspace --locked --bins
cargo test --workspace --locked "$@"
# The Python wheel (release: the wheel users get) and its tests (they
# compare with target/debug/srmae).
scripts/python.sh target/python-venv
SRMAE_BIN=target/debug/srmae target/python-venv/bin/python -m pytest python/tests -q

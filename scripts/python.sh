#!/usr/bin/env bash
# Builds the srmae Python wheel (python/: pyo3 + maturin, one abi3 wheel for
# CPython >= 3.9) and installs it, with numpy and pytest, into a virtual
# environment:
#   scripts/python.sh            # into .venv (then: source .venv/bin/activate)
#   scripts/python.sh VENV       # into VENV
#   PROFILE=dev scripts/python.sh VENV   # a debug build of the workspace crates
# The wheel is left in target/wheels/ for other environments (pip install it).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check "maturin>=1.9.4,<2" "numpy>=1.21" "pytest>=7"
rm -f target/wheels/srmae-*.whl
"$venv/bin/maturin" build --profile "${PROFILE:-release}" --locked -m python/Cargo.toml -o target/wheels
"$venv/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps target/wheels/srmae-*.whl
"$venv/bin/python" -c "import srmae; print('srmae', srmae.__version__, 'installed in $venv')"

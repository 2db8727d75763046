#!/usr/bin/env bash
# Set up a virtual environment with the test requirements and run the whole test suite.
# Usage: bash scripts/test.sh [pytest args]
#   bash scripts/test.sh -m "not slow and not browser and not quality"   # the fast subset, under a minute
#   bash scripts/test.sh tests/test_processor.py -x                       # one file
# Markers (pytest.ini): slow (over ~2 s: training acceptance, end-to-end), browser (Chromium), quality (the
# shipped model's quality floors).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch first and pinned: a bare requirement would pull a multi-GB CUDA build on CPU-only machines.
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
"$VENV/bin/python" -m pip install -q -r requirements-test.txt
# The browser tests drive Debian's Chromium; install it when we may (root, apt) and it is absent.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; browser tests will be skipped" >&2
fi
exec "$VENV/bin/python" -m pytest "$@"

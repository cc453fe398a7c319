#!/usr/bin/env bash
# Install flipseg with its test extras (PyTorch 2.13.0 CPU build) and run the whole suite.
# The browser tests of `flipseg serve` (tests/serve/) drive Debian's headless Chromium:
# chromium and chromium-driver are installed here when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! [ -x /usr/bin/chromium ] || ! [ -x /usr/bin/chromedriver ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver
  else
    echo "scripts/test.sh: chromium / chromium-driver missing and not root: the browser tests" \
         "will skip (apt-get install chromium chromium-driver)" >&2
  fi
fi
python3 -m pip install -q torch==2.13.0 -e ".[test]"
python3 -m ruff check src tests benchmarks
python3 -m pytest -q

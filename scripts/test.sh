#!/usr/bin/env bash
# Install flipseg with its test extras (PyTorch 2.13.0 CPU build) and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q torch==2.13.0 -e ".[test]"
python3 -m ruff check src tests benchmarks
python3 -m pytest -q

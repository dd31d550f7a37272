#!/usr/bin/env bash
# The whole test suite, after the set-up: lint, type check, unit + integration tests.
# Integration tests build network namespaces, so they need root; without root they are skipped
# with the reason (BOOTSTRAPPERD_TEST_STRICT=1, as CI sets it, turns such skips into failures).
# Extra arguments go to pytest (e.g. scripts/test.sh tests/unit -k mac).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/setup.sh
if [ $# -eq 0 ]; then
  .venv/bin/ruff check .
  .venv/bin/ruff format --check .
  .venv/bin/mypy
fi
exec .venv/bin/python -m pytest "$@"

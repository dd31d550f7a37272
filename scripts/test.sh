#!/usr/bin/env bash
# The whole test suite, after the set-up: lint, type check, unit + integration tests.
# Integration tests build network namespaces, so they need root; without root they are skipped
# with the reason (BOOTSTRAPPERD_TEST_STRICT=1, as CI sets it, turns such skips into failures).
# Extra arguments go to pytest (e.g. scripts/test.sh tests/unit -k mac). Tests run on every core
# (pytest-xdist, one test file per worker at a time, so a module's fixtures are built once);
# BOOTSTRAPPERD_TEST_WORKERS=0 runs them in this process (for -s, pdb, or reading one test).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/setup.sh
if [ $# -eq 0 ]; then
  .venv/bin/ruff check .
  .venv/bin/ruff format --check .
  .venv/bin/mypy
fi
exec .venv/bin/python -m pytest -n "${BOOTSTRAPPERD_TEST_WORKERS:-auto}" --dist loadfile "$@"

#!/usr/bin/env bash
# The main job on the built-in example, after the set-up: `bootstrapperd demo` checks the bundled
# cluster description, packs a bsroot, and serves it inside a private network lab (namespaces
# need root). Extra arguments go to `bootstrapperd demo` (e.g. --hold to keep it serving).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/setup.sh
if [ "$(id -u)" -ne 0 ]; then
  exec sudo .venv/bin/bootstrapperd demo "$@"
fi
exec .venv/bin/bootstrapperd demo "$@"

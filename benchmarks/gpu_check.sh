#!/usr/bin/env bash
# The prepared GPU check (see benchmarks/gpu_check.py): bash benchmarks/gpu_check.sh OUT_DIR [--smoke] [--budget-s S]
# Installs nothing: uses the repository's .venv when it exists, else the machine's python3 (a GPU box's own torch).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
  echo "usage: bash benchmarks/gpu_check.sh OUT_DIR [--smoke] [--budget-s SECONDS]" >&2
  exit 2
fi
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
exec "$PY" -m benchmarks.gpu_check "$@"

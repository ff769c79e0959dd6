#!/usr/bin/env bash
# Install everything the tests need on a fresh machine, then run all of them:
# lint (ruff), types (mypy --strict), architecture (import-linter), unit tests, and the real-kernel
# tests under QEMU. Under CI (CI=true) a VM test that cannot run FAILS instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
if [ "${CI:-}" = "true" ]; then export RNA_REQUIRE_VM=1 RNA_REQUIRE_PROMTOOL=1; fi

if [ "$(id -u)" = 0 ]; then
  bash tools/vm/install-deps.sh
  bash benchmarks/install-deps.sh  # prometheus-node-exporter: the benchmarks' baseline
else
  echo "test.sh: not root: not installing QEMU/kernel/promtool; VM tests will skip with a reason" >&2
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

echo "== ruff";          .venv/bin/ruff check . && .venv/bin/ruff format --check .
echo "== mypy --strict"; .venv/bin/mypy
echo "== import-linter"; .venv/bin/lint-imports
echo "== static (hadolint, kustomize, promtool)"; bash tools/check-static.sh
echo "== pytest";        .venv/bin/python -m pytest "$@"
echo "test.sh: all checks passed in $(( $(date +%s) - started ))s"

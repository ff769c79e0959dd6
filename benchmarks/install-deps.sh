#!/usr/bin/env bash
# What the benchmarks need beyond the Python packages (pip install '.[test]'): Debian's
# prometheus-node-exporter, the memory/CPU baseline (its package does not start a service here: it is
# run by the benchmark on 127.0.0.1 and stopped after). The QEMU test bed for the VM benchmark comes from
# tools/vm/install-deps.sh. Run as root; idempotent.
set -euo pipefail
if ! command -v prometheus-node-exporter >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus-node-exporter >/dev/null
fi
prometheus-node-exporter --version 2>&1 | head -1

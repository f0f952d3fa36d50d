#!/usr/bin/env bash
# Installs headless Chromium and its WebDriver (Debian packages) for tests/report/test_report.py.
# Idempotent: does nothing when both are already installed. The report test (tests/test_pipeline_e2e.py)
# runs it when Chromium is missing, as the SLURM test starts its own cluster.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends chromium chromium-driver

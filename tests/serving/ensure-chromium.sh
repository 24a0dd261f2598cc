#!/usr/bin/env bash
# Debian's Chromium for the web page test (tests/serving/test_web_page.py), installed if absent.
# Playwright drives it at /usr/bin/chromium; no browser is ever downloaded by a test tool.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "Chromium is missing: run 'apt-get install -y chromium' as root" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null

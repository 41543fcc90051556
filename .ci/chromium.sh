#!/bin/sh
# Make sure the browser test (tests/report/test_browser.py, marked "browser") can run:
# install Debian's chromium and chromium-driver when either binary is missing. Called by .ci/run.
set -eu

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    echo "chromium: already installed ($(/usr/bin/chromedriver --version 2>/dev/null | head -n 1))"
    exit 0
fi

# CI containers run as root; elsewhere use sudo if there is one.
SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "chromium: /usr/bin/chromium or /usr/bin/chromedriver is missing and I am not root (no sudo)" >&2
        exit 1
    fi
fi

echo "chromium: installing chromium and chromium-driver with apt-get"
$SUDO apt-get update -q
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver

for bin in /usr/bin/chromium /usr/bin/chromedriver; do
    if [ ! -x "$bin" ]; then
        echo "chromium: $bin still missing after apt-get install" >&2
        exit 1
    fi
done
echo "chromium: installed ($(/usr/bin/chromedriver --version 2>/dev/null | head -n 1))"

#!/usr/bin/env bash
# The browser tests (tests/test_ui_browser.py) drive the system's Chromium: Playwright cannot
# download a browser of its own here. Install Debian's where it is missing and we can (root,
# apt); otherwise say why and go on: the browser tests then skip, or fail under CI (CI set).
set -u
if [ -n "${TETHER_CHROMIUM:-}" ] || command -v chromium >/dev/null 2>&1 \
        || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "ensure-chromium: no chromium on PATH and not root: browser tests will skip" \
         "(sudo apt-get install chromium, or set TETHER_CHROMIUM to a Chromium executable)"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-chromium: no chromium on PATH and no apt-get: browser tests will skip" \
         "(install Chromium, or set TETHER_CHROMIUM to its executable)"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
echo "ensure-chromium: installing Debian's chromium for the browser tests"
# A fresh machine's package lists may be empty or stale: update only when the first try fails.
apt-get install -y -q chromium >/dev/null \
    || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; } \
    || echo "ensure-chromium: apt-get install chromium failed: browser tests will skip" \
            "(or fail under CI)"
exit 0

#!/bin/sh
# Installs what the browser tests need when it is missing (tests/lib/node-setup.sh): Debian's
# chromium ($SOCKGATE_CHROMIUM, default /usr/bin/chromium), certutil (libnss3-tools: it puts the
# HTTPS test's own CA into the NSS database Chromium trusts), nodejs, npm, and playwright-core at
# the version package-lock.json pins (a release that takes Debian 12's Node 18).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
exec sh "$here/../lib/node-setup.sh" "$here" playwright-core \
    "${SOCKGATE_CHROMIUM:-/usr/bin/chromium}=chromium" certutil=libnss3-tools

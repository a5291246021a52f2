#!/bin/sh
# Installs what the browser test needs when it is missing: Debian's chromium (apt-get, as root)
# and the npm packages pinned in package-lock.json (npm ci). Does nothing when both are there.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

chromium=${SOCKGATE_CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
    "$root/scripts/install-deps.sh" chromium
fi
if [ ! -x "$chromium" ]; then
    echo "setup: $chromium is still missing after installing Debian's chromium" >&2
    exit 1
fi

# certutil puts the HTTPS test's own CA into the NSS database Chromium trusts (https.test.mjs).
if ! command -v certutil >/dev/null 2>&1; then
    "$root/scripts/install-deps.sh" libnss3-tools
fi

for tool in node npm; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "setup: $tool is needed to run the browser test (Debian packages nodejs and npm)" >&2
        exit 1
    fi
done

# npm ci again when the installed playwright-core is not the version the lock file pins.
wanted=$(node -e 'console.log(require(process.argv[1]).packages["node_modules/playwright-core"].version)' \
    "$here/package-lock.json")
installed=$(node -e 'try { console.log(require(process.argv[1]).version) } catch { console.log("none") }' \
    "$here/node_modules/playwright-core/package.json")
if [ "$installed" != "$wanted" ]; then
    echo "setup: installing playwright-core $wanted with npm ci (found: $installed)" >&2
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi

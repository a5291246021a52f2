#!/bin/sh
# Installs what the WebSocket test needs when it is missing: Debian's websockify (the reference
# bridge the same client code runs against), nodejs and npm, and the ws package pinned in
# package-lock.json (npm ci). Does nothing when all are there.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

if ! command -v websockify >/dev/null 2>&1; then
    "$root/scripts/install-deps.sh" websockify
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    "$root/scripts/install-deps.sh" nodejs npm
fi
for tool in websockify node npm; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "setup: $tool is needed to run the WebSocket test (Debian packages websockify, nodejs, npm)" >&2
        exit 1
    fi
done

wanted=$(node -e 'console.log(require(process.argv[1]).packages["node_modules/ws"].version)' "$here/package-lock.json")
installed=$(node -e 'try { console.log(require(process.argv[1]).version) } catch { console.log("none") }' \
    "$here/node_modules/ws/package.json")
if [ "$installed" != "$wanted" ]; then
    echo "setup: installing ws $wanted with npm ci (found: $installed)" >&2
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi

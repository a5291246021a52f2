#!/bin/sh
# Installs what the tus test needs when it is missing: Debian's nodejs and npm (apt-get, as root)
# and tus-js-client at the version package-lock.json pins (npm ci). Does nothing when all are there.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    "$root/scripts/install-deps.sh" nodejs npm
fi
for tool in node npm; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "setup: $tool is needed to run the tus test (Debian packages nodejs and npm)" >&2
        exit 1
    fi
done

wanted=$(node -e 'console.log(require(process.argv[1]).packages["node_modules/tus-js-client"].version)' \
    "$here/package-lock.json")
installed=$(node -e 'try { console.log(require(process.argv[1]).version) } catch { console.log("none") }' \
    "$here/node_modules/tus-js-client/package.json")
if [ "$installed" != "$wanted" ]; then
    echo "setup: installing tus-js-client $wanted with npm ci (found: $installed)" >&2
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi

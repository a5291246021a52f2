#!/bin/sh
# Installs what one Node test suite needs when it is missing, and does nothing when all is there:
#   node-setup.sh SUITE_DIR NPM_PACKAGE [TOOL=DEBIAN_PACKAGE]...
# Each TOOL (a command name, or an absolute path such as /usr/bin/chromium) missing from the
# machine gets its Debian package, as do nodejs and npm (scripts/install-deps.sh: apt-get, as
# root); then `npm ci` in SUITE_DIR when the installed NPM_PACKAGE is not the version its
# package-lock.json pins. The suites' own setup.sh files call this with what they need.
set -eu
if [ $# -lt 2 ]; then
    echo "usage: node-setup.sh SUITE_DIR NPM_PACKAGE [TOOL=DEBIAN_PACKAGE]..." >&2
    exit 2
fi
suite=$(cd "$1" && pwd)
package=$2
shift 2
root=$(cd "$(dirname "$0")/../.." && pwd)
name=$(basename "$suite")

# 0 when tool (a name on PATH, or an absolute path) can be run.
has_tool() {
    case "$1" in
        /*) [ -x "$1" ] ;;
        *) command -v "$1" >/dev/null 2>&1 ;;
    esac
}

# Debian 12's nodejs is 18, which every pinned package takes (package.json "engines"). Only what
# is missing is installed: a machine with another Node.js (and its own npm) keeps it.
needs="$* node=nodejs npm=npm"
missing=""
for need in $needs; do
    has_tool "${need%%=*}" || missing="$missing ${need#*=}"
done
if [ -n "$missing" ]; then
    # shellcheck disable=SC2086 # one word per package is intended
    "$root/scripts/install-deps.sh" $missing
fi
for need in $needs; do
    if ! has_tool "${need%%=*}"; then
        echo "setup: ${need%%=*} is needed to run the $name tests (Debian package ${need#*=})" >&2
        exit 1
    fi
done

wanted=$(node -e 'console.log(require(process.argv[1]).packages["node_modules/" + process.argv[2]].version)' \
    "$suite/package-lock.json" "$package")
installed=$(node -e 'try { console.log(require(process.argv[1]).version) } catch { console.log("none") }' \
    "$suite/node_modules/$package/package.json")
if [ "$installed" != "$wanted" ]; then
    echo "setup: installing $package $wanted with npm ci in $suite (found: $installed)" >&2
    (cd "$suite" && npm ci --no-audit --no-fund --loglevel=error)
fi

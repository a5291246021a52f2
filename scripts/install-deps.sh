#!/bin/sh
# Installs the Debian packages given as arguments that are not installed yet (apt-get, as root).
set -eu
missing=""
for pkg in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $pkg"
    fi
done
[ -z "$missing" ] && exit 0
echo "installing:$missing" >&2
if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: run as root, or install these packages first:$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Tests that install what they need (the browser test, the manifest check) run side by side under
# `ctest -j`: one apt-get at a time, and a dpkg lock held by anything else is waited for, not failed on.
exec 9>/tmp/sockgate-install-deps.lock
flock 9
apt-get -o DPkg::Lock::Timeout=600 update -qq
# shellcheck disable=SC2086 # word splitting of the package list is intended
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends $missing

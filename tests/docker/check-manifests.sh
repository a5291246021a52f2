#!/bin/sh
# Runs check_manifests.py with Debian's Python and its python3-yaml and
# python3-kubernetes (the API types the manifests are checked against),
# installing them when missing and running as root; else with any Python that
# has PyYAML, which skips only the check against the API types.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src=${1:-$here/../..}
check="$here/check_manifests.py"
debian_py=/usr/bin/python3
if [ -x "$debian_py" ] && "$debian_py" -c 'import yaml, kubernetes.client' 2>/dev/null; then
    exec "$debian_py" "$check" "$src"
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    "$here/../../scripts/install-deps.sh" python3 python3-yaml python3-kubernetes >&2
    exec "$debian_py" "$check" "$src"
fi
for py in python3 "$debian_py"; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import yaml' 2>/dev/null; then
        exec "$py" "$check" "$src"
    fi
done
echo "check-manifests: no Python with PyYAML; install Debian's python3-yaml (and python3-kubernetes)" >&2
exit 1

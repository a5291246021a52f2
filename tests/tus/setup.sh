#!/bin/sh
# Installs what the tus test needs when it is missing (tests/lib/node-setup.sh): nodejs, npm and
# tus-js-client at the version package-lock.json pins.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
exec sh "$here/../lib/node-setup.sh" "$here" tus-js-client

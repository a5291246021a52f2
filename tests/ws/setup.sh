#!/bin/sh
# Installs what the WebSocket test needs when it is missing (tests/lib/node-setup.sh): Debian's
# websockify (the reference bridge the same client code runs against), nodejs, npm, and the ws
# package at the version package-lock.json pins.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
exec sh "$here/../lib/node-setup.sh" "$here" ws websockify=websockify

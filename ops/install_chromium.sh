#!/usr/bin/env bash
# Debian's Chromium for the inspector's browser test (tests/integration/test_inspector.py):
# the test drives the system's browser, never a browser build of Playwright's own, which could
# not be downloaded here. Make runs this only when /usr/bin/chromium is missing (a fresh
# machine); apt-get needs root, so a developer who is not root is asked through sudo.
set -euo pipefail
packages=(chromium fonts-dejavu-core)
if [ "$(id -u)" -eq 0 ]; then
    run=()
elif command -v sudo >/dev/null; then
    run=(sudo)
else
    echo "Chromium is missing and installing it needs root: apt-get install ${packages[*]}" >&2
    exit 1
fi
echo "Installing ${packages[*]} from Debian's packages (once per machine) ..."
# A fresh machine has no package lists yet.
"${run[@]}" apt-get update -q
"${run[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${packages[@]}"
test -x /usr/bin/chromium

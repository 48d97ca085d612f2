#!/usr/bin/env bash
# The Chromium the browser tests drive through Playwright (tests/ui).
#
#   scripts/browser.sh    find Chromium, installing Debian's package if it is missing (apt, as root), and
#                         print the path of its binary as the last stdout line; exit 1 if there is none
#
# Playwright's own browser download is not used: it needs a CDN that offline machines cannot reach, while
# the distribution's Chromium comes from the same package mirror as everything else. The binary is
# $M2N2_TEST_CHROMIUM, else `chromium` (or `chromium-browser`, `google-chrome`) on PATH. Progress goes to stderr.
set -euo pipefail

log() { echo "browser.sh: $*" >&2; }

find_bin() {
    local bin
    for bin in "${M2N2_TEST_CHROMIUM:-}" chromium chromium-browser google-chrome; do
        if [ -n "$bin" ] && bin=$(command -v "$bin" 2>/dev/null) && [ -x "$bin" ]; then
            echo "$bin"
            return 0
        fi
    done
    return 1
}

install() {
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        log "Chromium is not installed and cannot be installed here (needs root and apt-get)"
        return 1
    fi
    log "installing Chromium from Debian packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends chromium >&2
}

find_bin || { install && find_bin; } || { log "no Chromium: the browser tests will skip"; exit 1; }

#!/usr/bin/env bash
# Install the browser the review UI tests drive: Debian's chromium and chromium-driver (apt), no
# browser downloads. Idempotent: does nothing when both are present. Needs root to install (as on
# CI); without root it says what is missing and exits 0 locally, so the browser tests skip with
# that reason; with CI=true a browser that cannot be installed fails the setup.
set -euo pipefail

CHROMIUM="${REWARDLAB_CHROMIUM:-/usr/bin/chromium}"
CHROMEDRIVER="${REWARDLAB_CHROMEDRIVER:-/usr/bin/chromedriver}"

log() { echo "install_browser.sh: $*" >&2; }
have() { [ -x "$CHROMIUM" ] && [ -x "$CHROMEDRIVER" ]; }

if have; then
    log "found $("$CHROMIUM" --version 2>/dev/null || echo chromium) and $("$CHROMEDRIVER" --version 2>/dev/null | cut -d' ' -f1-2)"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    log "chromium/chromium-driver missing and not root: run as root (apt-get install -y chromium chromium-driver); the browser tests will skip"
    [ "${CI:-}" != true ] || exit 1
    exit 0
fi
command -v apt-get >/dev/null || { log "no apt-get here: install chromium and its chromedriver by hand"; [ "${CI:-}" != true ] || exit 1; exit 0; }
log "installing chromium and chromium-driver with apt"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >&2
apt-get install -y -q --no-install-recommends chromium chromium-driver >&2
have || { log "chromium or chromedriver still missing after apt-get install"; [ "${CI:-}" != true ] || exit 1; }
log "installed $("$CHROMIUM" --version 2>/dev/null)"

#!/usr/bin/env bash
# Install jemalloc (Debian's libjemalloc2, apt), the heap allocator every `rewardlab` command runs on
# where it is installed (training/memory.py exec_with_jemalloc): glibc's malloc lets an experiment's
# peak memory climb run over run (heap fragmentation), jemalloc keeps it flat at the same speed
# (docs/benchmarks.md, "Memory"). Idempotent: does nothing when the library is there. Without root or
# apt it says so and exits 0 (rewardlab then runs on glibc's malloc); with CI=true a jemalloc that
# cannot be installed fails the setup, since the tests check the allocator.
set -euo pipefail

log() { echo "install_jemalloc.sh: $*" >&2; }
# ldconfig lives in /sbin, which a non-root PATH (and CI's) may leave out; Python's
# ctypes.util.find_library, which rewardlab asks, reads the same cache through /sbin/ldconfig
LDCONFIG="$(command -v ldconfig || echo /sbin/ldconfig)"
found() { "$LDCONFIG" -p 2>/dev/null | grep -m1 'libjemalloc\.so\.2' | sed 's/.*=> //'; }
have() { [ -n "$(found)" ]; }
missing() { [ "${CI:-}" != true ] || exit 1; exit 0; }

[ "$(uname -s)" = Linux ] || { log "not Linux: rewardlab uses the system allocator here"; exit 0; }
if have; then
    log "found $(found)"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    log "libjemalloc2 missing and not root: run as root (apt-get install -y libjemalloc2); rewardlab runs on glibc's malloc until then"
    missing
fi
command -v apt-get >/dev/null || { log "no apt-get here: install jemalloc by hand (conda: jemalloc)"; missing; }
log "installing libjemalloc2 with apt"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends libjemalloc2 >&2 \
  || { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends libjemalloc2 >&2; }
have || { log "libjemalloc.so.2 still missing after apt-get install"; missing; }
log "installed $(found)"

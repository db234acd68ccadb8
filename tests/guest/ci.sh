#!/usr/bin/env bash
# Guest tier for .ci/run: Debian's stock kernel under QEMU TCG drives vmstor's controllers
# (IDE behind QEMU's PCI proxy, vhost-user-blk and vhost-user-scsi from `vmstor serve`) and the
# crash-of-the-VMM boot. See docs/guests.md. run.sh installs QEMU and builds the guest itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
# The binaries run.sh starts (debug, as the workspace tests built them).
cargo build -q -p vmstor --bin vmstor
cargo build -q -p vmstor-qemu-proxy --bin vmstor-qemu-proxy
export BACKEND=vmstor
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if bash tests/guest/run.sh 2>&1 | tee "$log"; then
  exit 0
fi
# One retry, only for the known intermittent failure (docs/guests.md, "Known issue"): the IDE
# disk behind the proxy never appears, so the ide test and its host checks fail and nothing else.
if grep -qE '^>> run: failed: ide\(rc=[^)]*\)( host-checks\([0-9]+\))?$' "$log"; then
  echo ">> ci: only the IDE disk behind the PCI proxy failed (known intermittent); one retry" >&2
  exec bash tests/guest/run.sh
fi
exit 1

#!/usr/bin/env bash
# Guest tier for .ci/run: Debian's stock kernel under QEMU TCG drives vmstor's controllers.
# See docs/guests.md. run.sh installs QEMU and builds the guest itself.
#
# Two runs, so the experimental IDE-behind-the-PCI-proxy path cannot take the others down:
#   1. vblk, vscsi (vhost-user-blk and vhost-user-scsi from `vmstor serve`) and the crash-of-
#      the-VMM boot: must pass on the first try.
#   2. ide, proxy (vmstor's IDE controller and the proxy's test function behind QEMU's
#      x-pci-proxy-dev): up to 5 tries (IDE_TRIES), because of the known intermittent failure in which the
#      guest's libata never sees the proxied IDE disk (docs/guests.md, "Known issue"); every
#      failed try prints its logs.
set -euo pipefail
cd "$(dirname "$0")/../.."
# The binaries run.sh starts (debug, as the workspace tests built them).
cargo build -q -p vmstor --bin vmstor
cargo build -q -p vmstor-qemu-proxy --bin vmstor-qemu-proxy
export BACKEND=vmstor
log=$(mktemp)
trap 'rm -f "$log"' EXIT
passed=0
tally() {  # adds the "guest: N passed, M failed" line of the last run to the totals
  local n; n=$(sed -n 's/^guest: \([0-9]*\) passed, \([0-9]*\) failed$/\1/p' "$log" | tail -1)
  passed=$((passed + ${n:-0}))
}

echo ">> ci: virtio-blk, virtio-scsi and the crash boot"
bash tests/guest/run.sh --tests vblk,vscsi 2>&1 | tee "$log"
tally

ok=0
tries=${IDE_TRIES:-5}
for try in $(seq "$tries"); do
  echo ">> ci: IDE and the proxy test function behind x-pci-proxy-dev (try $try of $tries)"
  if QEMU_TIMEOUT=${QEMU_TIMEOUT:-150} bash tests/guest/run.sh --tests ide,proxy --no-crash 2>&1 | tee "$log"; then
    ok=1
    break
  fi
done
tally
if [ "$ok" != 1 ]; then
  echo "guest: $passed passed, 2 failed"
  exit 1
fi
[ "$try" = 1 ] || echo ">> ci: the IDE run passed on try $try (known intermittent proxy failure before it)"
echo "guest: $passed passed, 0 failed"

#!/bin/sh
# Crash of the VMM, guest half: write a pattern and fsync it, announce it on the console, then
# keep writing elsewhere (unsynced) until the host SIGKILLs QEMU. The host then stops the
# backend and checks every fsynced block in the image (run.sh: crash_check).
. /lib/vmstor.sh
need_disk crash
seed=$(arg vmstor.seed 1)
blocks=$(arg vmstor.blocks 512)
pattern "$seed" 0 "$blocks" > /tmp/pat
# buffered writes through the page cache, made durable by fsync (FLUSH at the device)
if dd if=/tmp/pat of="$DEV" bs=4096 conv=fsync 2>/dev/null; then
  echo "VMSTOR-CRASH-READY seed=$seed blocks=$blocks"
else
  bad "write + fsync the pattern" "dd failed"; finish
fi
# now keep the device busy until the host kills the VMM
i=0
while :; do
  pattern $((seed + 1)) $((blocks + i % 256)) 16 | dd of="$DEV" bs=4096 seek=$((blocks + i % 256)) 2>/dev/null
  i=$((i + 16))
done

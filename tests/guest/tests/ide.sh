#!/bin/sh
# IDE/ATA through libata (ata_piix on QEMU's PIIX3, ata_generic on the x-pci-proxy-dev function).
# Run with libata.fua=1 on the command line so libata uses (and sd reports) the FUA commands.
. /lib/vmstor.sh
need_disk ide
sd=$(dmesg | grep "\[$DISK\]")
check_re "libata reports the disk with write cache enabled" 'Write cache: enabled' "$sd"
# Not a check: whether sd uses FUA on a PATA disk is libata's policy (Debian's 6.1 kernel reports
# no DPO/FUA here even with libata.fua=1 and the FUA commands in IDENTIFY, see docs/guests.md).
say "sd: $(echo "$sd" | grep -o 'Write cache:.*' | head -1)"
check_eq "queue/write_cache is 'write back'" "$(cat /sys/block/$DISK/queue/write_cache)" "write back"

ident=$(hdparm -I "$DEV" 2>/dev/null)
check_re "hdparm -I: write cache supported and enabled" '^[[:space:]]+\*[[:space:]]+Write cache' "$ident"
check_re "hdparm -I: FLUSH_CACHE_EXT" '\*[[:space:]]+FLUSH_CACHE_EXT' "$ident"
check_re "hdparm -I: 48-bit addressing" '\*[[:space:]]+48-bit Address feature set' "$ident"
check_re -g ata-fua "hdparm -I: WRITE_{DMA|MULTIPLE}_FUA_EXT" '\*[[:space:]]+WRITE_\{DMA\|MULTIPLE\}_FUA_EXT' "$ident"

check_rc "hdparm -F (FLUSH CACHE) succeeds" hdparm -F "$DEV"

# Write cache off: the device must report it off, libata/sd must follow (the kernel stops
# sending flushes), and writes must still read back. The host-side hook checks the flush.
check_rc "hdparm -W0 succeeds" hdparm -W0 "$DEV"
check_re "hdparm -W reports write-caching off" 'write-caching += +0 \(off\)' "$(hdparm -W "$DEV" 2>&1)"
i=0; while [ $i -lt 30 ] && [ "$(cat /sys/block/$DISK/queue/write_cache)" != "write through" ]; do usleep 100000; i=$((i+1)); done
check_eq "queue/write_cache follows to 'write through'" "$(cat /sys/block/$DISK/queue/write_cache)" "write through"
pattern 11 0 16 > /tmp/p11
check_rc "64 KiB O_DIRECT write with write cache off" dd if=/tmp/p11 of="$DEV" bs=4096 seek=256 oflag=direct
check_eq "it reads back" "$(dd if="$DEV" bs=4096 skip=256 count=16 iflag=direct 2>/dev/null | md5sum)" "$(md5sum < /tmp/p11)"
check_rc "hdparm -W1 succeeds" hdparm -W1 "$DEV"
check_re "hdparm -W reports write-caching on" 'write-caching += +1 \(on\)' "$(hdparm -W "$DEV" 2>&1)"
i=0; while [ $i -lt 30 ] && [ "$(cat /sys/block/$DISK/queue/write_cache)" != "write back" ]; do usleep 100000; i=$((i+1)); done
check_eq "queue/write_cache back to 'write back'" "$(cat /sys/block/$DISK/queue/write_cache)" "write back"

# A filesystem round trip: data written, synced, unmounted, then read back after a remount
# with the page cache dropped (so the second read really comes from the disk).
check_rc "mke2fs" mke2fs -q -b 4096 "$DEV" 8192
mkdir -p /mnt/ide
if mount -t ext4 "$DEV" /mnt/ide; then
  pattern 12 0 64 > /mnt/ide/data
  sync
  umount /mnt/ide
  echo 3 > /proc/sys/vm/drop_caches
  mount -t ext4 "$DEV" /mnt/ide && \
    check_eq "file written before a remount reads back" "$(md5sum < /mnt/ide/data)" "$(pattern 12 0 64 | md5sum)"
  umount /mnt/ide
else
  bad "mount the new filesystem" "mount failed"
fi
check_rc "sg_sync through libata's SAT (SYNCHRONIZE CACHE -> FLUSH CACHE EXT)" sg_sync "$DEV"
finish

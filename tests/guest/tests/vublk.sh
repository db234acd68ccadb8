#!/bin/sh
# vhost-user-blk smoke test: the vhost-user path itself (memfd guest RAM shared with a backend
# daemon, several virtqueues) carrying real data. Run against qemu-storage-daemon with
# BACKEND=qemu; with BACKEND=vmstor the full vblk test drives vhost-user-blk instead.
. /lib/vmstor.sh
need_disk vublk
pattern 41 0 256 > /tmp/p41
check_rc "1 MiB O_DIRECT write" dd if=/tmp/p41 of="$DEV" bs=65536 seek=16 oflag=direct
check_eq "it reads back" "$(dd if="$DEV" bs=65536 skip=16 count=16 iflag=direct 2>/dev/null | md5sum)" "$(md5sum < /tmp/p41)"
check_rc "fsync after a buffered write" sh -c "dd if=/tmp/p41 of=$DEV bs=65536 seek=64 conv=fsync 2>/dev/null"
before=$(vq_irqs $DISK | tr '\n' ' ')
fio_verify "$DEV" 2
used=$(queues_used $DISK "$before")
check_re "fio's two jobs (one per CPU) used several virtqueues ($used got completions)" '^([2-9]|[1-9][0-9]+)$' "$used"
finish

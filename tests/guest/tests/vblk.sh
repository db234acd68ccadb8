#!/bin/sh
# virtio-blk (in-QEMU virtio-blk-pci, or vhost-user-blk-pci to a backend daemon).
. /lib/vmstor.sh
need_disk vblk
q=/sys/block/$DISK/queue
check_eq "queue/write_cache is 'write back' (VIRTIO_BLK_F_FLUSH + CONFIG_WCE, writeback)" "$(cat $q/write_cache)" "write back"
check_rc "cache_type <- 'write through'" sh -c "echo 'write through' > /sys/block/$DISK/cache_type"
check_eq "cache_type reads 'write through'" "$(cat /sys/block/$DISK/cache_type)" "write through"
check_eq "queue/write_cache follows to 'write through'" "$(cat $q/write_cache)" "write through"
pattern 21 0 16 > /tmp/p21
check_rc "64 KiB O_DIRECT write in write-through mode" dd if=/tmp/p21 of="$DEV" bs=4096 seek=512 oflag=direct
check_eq "it reads back" "$(dd if="$DEV" bs=4096 skip=512 count=16 iflag=direct 2>/dev/null | md5sum)" "$(md5sum < /tmp/p21)"
check_rc "cache_type <- 'write back'" sh -c "echo 'write back' > /sys/block/$DISK/cache_type"
check_eq "queue/write_cache back to 'write back'" "$(cat $q/write_cache)" "write back"

# discard and write zeroes
check_re -g vblk-discard "discard advertised (discard_max_bytes > 0)" '^[1-9]' "$(cat $q/discard_max_bytes)"
check_re -g vblk-wzeroes "write zeroes advertised (write_zeroes_max_bytes > 0)" '^[1-9]' "$(cat $q/write_zeroes_max_bytes)"
pattern 22 0 256 > /tmp/p22
dd if=/tmp/p22 of="$DEV" bs=4096 seek=1024 oflag=direct 2>/dev/null
check_rc -g vblk-discard "blkdiscard of 1 MiB" /sbin/blkdiscard -o $((1024 * 4096)) -l $((128 * 4096)) "$DEV"
check_rc -g vblk-wzeroes "blkdiscard -z of 1 MiB" /sbin/blkdiscard -z -o $((1024 * 4096)) -l $((256 * 4096)) "$DEV"
check_eq -g vblk-wzeroes "the zeroed range reads back as zeroes" \
  "$(dd if="$DEV" bs=4096 skip=1024 count=256 iflag=direct 2>/dev/null | md5sum)" \
  "$(dd if=/dev/zero bs=4096 count=256 2>/dev/null | md5sum)"

nq=$(ls -d /sys/block/$DISK/mq/* | wc -l)
check_re "several virtqueues ($nq blk-mq hardware queues)" '^([2-9]|[1-9][0-9]+)$' "$nq"
before=$(vq_irqs $DISK | tr '\n' ' ')
fio_verify "$DEV" 2
used=$(queues_used $DISK "$before")
check_re "fio's two jobs (one per CPU) used several virtqueues ($used got completions)" '^([2-9]|[1-9][0-9]+)$' "$used"
finish

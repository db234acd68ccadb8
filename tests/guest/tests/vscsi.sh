#!/bin/sh
# SCSI disk behind virtio-scsi (in-QEMU virtio-scsi-pci + scsi-hd, or vhost-user-scsi-pci).
. /lib/vmstor.sh
need_disk vscsi
q=/sys/block/$DISK/queue
hctl=$(basename "$(readlink -f /sys/block/$DISK/device)")
sd=$(dmesg | grep "\[$DISK\]")
check_re "sd reports 'Write cache: enabled'" 'Write cache: enabled' "$sd"
check_re -g scsi-dpofua "sd reports DPO/FUA support" 'supports DPO and FUA' "$sd"
check_eq "queue/write_cache is 'write back'" "$(cat $q/write_cache)" "write back"

# MODE SENSE(10) caching page: current WCE=1 and WCE changeable. sg_modes prints the page as
# hex bytes starting at the page code: "08 12 <byte2> ..."; WCE is bit 2 of byte 2.
wce() {
  local b
  b=$(sg_modes "$@" -p 8 "$DEV" 2>/dev/null | sed -n 's/^ *00 *[08]8 [0-9a-f][0-9a-f] \([0-9a-f][0-9a-f]\).*/\1/p' | head -1)
  [ -n "$b" ] && echo $(( (0x$b >> 2) & 1 ))
}
check_eq "sg_modes -p 8: WCE=1 (current)" "$(wce)" "1"
check_eq "sg_modes -p 8: WCE changeable" "$(wce -c 1)" "1"
check_rc "sg_sync (SYNCHRONIZE CACHE(10))" sg_sync "$DEV"
check_rc -g scsi-sync16 "sg_sync --16 (SYNCHRONIZE CACHE(16))" sg_sync --16 "$DEV"

# scsi_disk cache_type: sd sends MODE SELECT to clear WCE; the host-side hook checks the flush.
ct=/sys/class/scsi_disk/$hctl/cache_type
check_rc "cache_type <- 'write through' (MODE SELECT WCE=0)" sh -c "echo 'write through' > $ct"
check_eq "scsi_disk cache_type reads 'write through'" "$(cat $ct)" "write through"
check_eq "sg_modes -p 8: WCE=0 after MODE SELECT" "$(wce)" "0"
check_eq "queue/write_cache follows to 'write through'" "$(cat $q/write_cache)" "write through"
pattern 31 0 16 > /tmp/p31
check_rc "64 KiB O_DIRECT write with write cache off" dd if=/tmp/p31 of="$DEV" bs=4096 seek=512 oflag=direct
check_eq "it reads back" "$(dd if="$DEV" bs=4096 skip=512 count=16 iflag=direct 2>/dev/null | md5sum)" "$(md5sum < /tmp/p31)"
check_rc "cache_type <- 'write back'" sh -c "echo 'write back' > $ct"
check_eq "sg_modes -p 8: WCE=1 again" "$(wce)" "1"

# VPD pages
check_rc "sg_vpd -p bl (B0 Block Limits)" sg_vpd -p bl "$DEV"
check_rc "sg_vpd -p bdc (B1 Block Device Characteristics)" sg_vpd -p bdc "$DEV"
lbpv=$(sg_vpd -p lbpv "$DEV" 2>&1)
check_re "sg_vpd -p lbpv (B2 Logical Block Provisioning): UNMAP supported" 'Unmap command supported \(LBPU\): 1' "$lbpv"

# REPORT SUPPORTED OPERATION CODES: lists at least the commands Linux and the tools here rely
# on, and an opcode it does not list is rejected with INVALID COMMAND OPERATION CODE.
ops=$(sg_opcodes -n "$DEV" 2>&1); rc=$?
result scsi-opcodes "sg_opcodes (REPORT SUPPORTED OPERATION CODES) succeeds" $rc "rc=$rc: $(echo "$ops" | tail -1)"
if [ $rc = 0 ]; then
  for op in 00 12 1a 25 28 2a 35 5a 88 8a 9e a0; do
    echo "$ops" | grep -qiE "^ *$op( |$)" || bad "sg_opcodes lists opcode 0x$op" "missing"
  done
  ok "sg_opcodes lists the core opcodes"
  # A CDB of its group's length: sg_raw decodes a reply to a CDB whose length does not fit
  # the opcode as if it came from NVMe and prints no sense.
  for op in 3b:10 3c:10 04:6; do
    len=${op#*:}; op=${op%:*}
    if ! echo "$ops" | grep -qiE "^ *$op( |$)"; then
      out=$(sg_raw -R "$DEV" $op $(printf '00 %.0s' $(seq 2 "$len")) 2>&1)
      check_re "unlisted opcode 0x$op is rejected as invalid" 'Invalid (command )?(operation|opcode)' "$out"
    fi
  done
fi

# UNMAP: then, if the disk says unmapped blocks read as zeroes (LBPRZ), they do.
pattern 32 0 64 > /tmp/p32
dd if=/tmp/p32 of="$DEV" bs=4096 seek=2048 oflag=direct 2>/dev/null
bs=$(cat $q/logical_block_size)
check_rc "sg_unmap of 256 KiB" sg_unmap --force --lba=$((2048 * 4096 / bs)) --num=$((64 * 4096 / bs)) "$DEV"
if sg_readcap -l "$DEV" 2>/dev/null | grep -q 'lbprz=1'; then
  check_eq "unmapped range reads as zeroes (LBPRZ=1)" \
    "$(dd if="$DEV" bs=4096 skip=2048 count=64 iflag=direct 2>/dev/null | md5sum)" \
    "$(dd if=/dev/zero bs=4096 count=64 2>/dev/null | md5sum)"
fi
before=$(vq_irqs $DISK | tr '\n' ' ')
fio_verify "$DEV" 2
used=$(queues_used $DISK "$before")
check_re "fio's two jobs (one per CPU) used several virtqueues ($used got completions)" '^([2-9]|[1-9][0-9]+)$' "$used"
finish

#!/bin/sh
# QEMU's PCI proxy (x-pci-proxy-dev) to vmstor-qemu-proxy's test function: configuration space,
# MMIO and I/O BARs, guest RAM shared by SYNC_SYSMEM (DMA both ways), and INTx through the
# doorbell UART. The function is described in crates/qemu-proxy/src/testdev.rs.
. /lib/vmstor.sh
bdf=$(arg vmstor.pci.proxy "")
d=/sys/bus/pci/devices/$bdf
[ -d "$d" ] || { bad "find the proxied function" "no $d"; finish; }
check_eq "vendor ID read through the proxy" "$(cat $d/vendor)" "0x1b36"
check_eq "device ID" "$(cat $d/device)" "0x00f0"
check_eq "class code" "$(cat $d/class)" "0xff0000"
check_eq "interrupt pin INTA# (config 0x3d)" "$(dd if=$d/config bs=1 skip=61 count=1 2>/dev/null | od -An -tu1 | tr -d ' ')" "1"
res0=$(sed -n 1p $d/resource); res1=$(sed -n 2p $d/resource)
set -- $res0; b0s=$1; b0e=$2
set -- $res1; b1s=$1; b1e=$2
check_eq "BAR0 sized 4 KiB by the kernel" "$(( b0e - b0s + 1 ))" "4096"
check_eq "BAR1 sized 32 bytes of I/O" "$(( b1e - b1s + 1 ))" "32"
check_rc "enable the function (COMMAND I/O+memory)" sh -c "echo 1 > $d/enable"

# MMIO BAR, every access size (busybox devmem)
check_eq "MMIO ID register" "$(devmem $b0s 32)" "0x564D5354"
devmem $((b0s + 0x48)) 64 0x0123456789ABCDEF
check_eq "MMIO 64-bit scratch write/read" "$(devmem $((b0s + 0x48)) 64)" "0x0123456789ABCDEF"
check_eq "MMIO 16-bit read inside it" "$(devmem $((b0s + 0x4c)) 16)" "0x4567"
devmem $((b0s + 0x7f)) 8 0x5a
check_eq "MMIO 8-bit write/read" "$(devmem $((b0s + 0x7f)) 8)" "0x5A"

# I/O BAR through sysfs resource1 (4-byte pread/pwrite are single inl/outl)
printf '\170\126\064\022' | dd of=$d/resource1 bs=4 seek=1 count=1 conv=notrunc 2>/dev/null
check_eq "I/O BAR 32-bit write/read" "$(dd if=$d/resource1 bs=4 skip=1 count=1 2>/dev/null | od -An -tx4 | tr -d ' ')" "12345678"

# configuration writes reach the function (device-specific byte 0x40)
printf '\245' | dd of=$d/config bs=1 seek=64 count=1 conv=notrunc 2>/dev/null
check_eq "config write/read at 0x40" "$(dd if=$d/config bs=1 skip=64 count=1 2>/dev/null | od -An -tx1 | tr -d ' ')" "a5"

# Guest RAM: the remote mapped all of it, and does not remap on repeated identical layouts
check_eq "the remote maps all 512 MiB of guest RAM" "$(( $(devmem $((b0s + 0x1c)) 32) ))" "512"
gen=$(( $(devmem $((b0s + 0x18)) 32) ))
check_re "few distinct layouts installed ($gen) of the many SYNC_SYSMEM QEMU sends" '^([1-9]|1[0-9])$' "$gen"

# DMA, device reads guest RAM: a 16-byte binary needle written only into reserved RAM
# (kernel argument memmap=64K$ADDR keeps Linux away from it; /dev/mem may touch it).
buf=$(arg vmstor.dmabuf 0)
if [ "$buf" != 0 ]; then
  w0=$(( 0x$(cut -c1-8 /proc/sys/kernel/random/uuid) | 0x01010101 ))
  w1=$(( 0x$(cut -c1-8 /proc/sys/kernel/random/uuid) | 0x01010101 ))
  w2=$(( 0x$(cut -c1-8 /proc/sys/kernel/random/uuid) | 0x01010101 ))
  w3=$(( 0x$(cut -c1-8 /proc/sys/kernel/random/uuid) | 0x01010101 ))
  i=0; for w in $w0 $w1 $w2 $w3; do devmem $((buf + 4 * i)) 32 $w; devmem $((b0s + 0x100 + 4 * i)) 32 $w; i=$((i + 1)); done
  devmem $((b0s + 0x110)) 32 0
  for o in 0 4 8 12 16 20; do devmem $((buf + 17 + o)) 32 0 2>/dev/null; done
  devmem $((b0s + 0x140)) 32 1
  check_eq "device found the needle in guest RAM (status 1)" "$(( $(devmem $((b0s + 0x144)) 32) ))" "1"
  check_eq "at the guest-physical address it was written to" "$(printf 0x%x $(( $(devmem $((b0s + 0x148)) 64) )))" "$(printf 0x%x $buf)"
  # DMA, device writes guest RAM: it wrote REMOTE-WAS-HERE one byte after the needle
  check_eq "device wrote next to it ('REMO')" "$(devmem $((buf + 17)) 32)" "0x4F4D4552"
  devmem $((b0s + 0x150)) 64 $((buf + 0x100))
  devmem $((b0s + 0x140)) 32 2
  check_eq "DMA write at a guest-chosen address ('VMST')" "$(devmem $((buf + 0x100)) 32)" "0x54534D56"
  devmem $((b0s + 0x150)) 64 0xfffffffff000
  devmem $((b0s + 0x140)) 32 2
  check_eq "DMA to an address outside guest RAM is refused (status 5)" "$(( $(devmem $((b0s + 0x144)) 32) ))" "5"
fi

# INTx: the proxy cannot raise it under TCG; the remote rings the doorbell UART on the same line
irq=$(cat $d/irq)
dbbdf=$(arg vmstor.pci.proxydb "")
if [ -n "$dbbdf" ]; then
  check_eq "doorbell UART shares the function's interrupt line" "$(cat /sys/bus/pci/devices/$dbbdf/irq)" "$irq"
  count() { awk -v n="$irq:" '$1 == n { s = 0; for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) s += $i; else break; print s }' /proc/interrupts; }
  before=$(count)
  devmem $((b0s + 0x10)) 32 1
  check_eq "PCI status shows the interrupt (config 0x06 bit 3)" "$(( $(dd if=$d/config bs=1 skip=6 count=1 2>/dev/null | od -An -tu1) & 8 ))" "8"
  i=0; while [ $i -lt 20 ] && [ "$(count)" = "$before" ]; do usleep 50000; i=$((i + 1)); done
  after=$(count)
  check_re "interrupt $irq fired after the rising edge ($before -> $after)" '^[1-9]' "$(( after - before ))"
  check_eq "one edge delivered" "$(( $(devmem $((b0s + 0x14)) 32) ))" "1"
  devmem $((b0s + 0x10)) 32 0
fi
check_re "the function counted the BAR accesses" '^[1-9]' "$(( $(devmem $((b0s + 0x8)) 32) ))"
finish

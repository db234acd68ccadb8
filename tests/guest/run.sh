#!/bin/bash
# run.sh - boot the test guest under QEMU TCG against the storage backends and run the guest
# test suite. See docs/guests.md.
#
# Usage: tests/guest/run.sh [options]
#   --backend qemu|vmstor   who implements the disks (default: $BACKEND, else qemu)
#       qemu    QEMU's own devices: PIIX3 IDE + ide-hd, virtio-blk-pci, virtio-scsi-pci +
#               scsi-hd, and vhost-user-blk-pci served by qemu-storage-daemon
#       vmstor  vmstor: `vmstor serve` (vhost-user-blk, vhost-user-scsi) and the IDE function
#               behind x-pci-proxy-dev (binaries from $VMSTOR_BIN / $VMSTOR_PROXY_BIN)
#   --tests a,b,c           guest tests for the main boot (default: all the backend has)
#   --no-crash              skip the crash-of-the-VMM boot
#   --crash-only            only the crash-of-the-VMM boot
#   --shell                 boot with every device, run only the --tests given (none by
#                           default) and give an interactive guest shell on the console
#   --keep                  keep the run directory (images, logs) even when everything passed
# Environment: QEMU_TIMEOUT (s, per QEMU run, default 240), SHELL_TIMEOUT (--shell, default
#   3600), GUEST_SMP (default 2),
#   GUEST_APPEND (extra kernel arguments), RUN_DIR (default tests/guest/work/runs/<time>).
# Prints "N passed, M failed" (tests, counting the crash check as one) and exits non-zero on
# any failure, after printing the guest console and backend logs.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=${GUEST_WORK:-$HERE/work}
BACKEND=${BACKEND:-qemu}
TESTS=""
DO_MAIN=1
DO_CRASH=1
SHELL_MODE=0
KEEP=0
while [ $# -gt 0 ]; do
  case $1 in
    --backend) BACKEND=$2; shift;;
    --backend=*) BACKEND=${1#*=};;
    --tests) TESTS=$2; shift;;
    --tests=*) TESTS=${1#*=};;
    --no-crash) DO_CRASH=0;;
    --crash-only) DO_MAIN=0;;
    --shell) SHELL_MODE=1; DO_CRASH=0;;
    --keep) KEEP=1;;
    -h|--help) sed -n '2,22p' "$0"; exit 0;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
  shift
done
QEMU_TIMEOUT=${QEMU_TIMEOUT:-240}
SMP=${GUEST_SMP:-2}
log() { echo ">> run: $*" >&2; }
die() { echo "!! run: $*" >&2; exit 1; }

# ------------------------------------------------------------------ host tools
# Debian's qemu-system-x86 (7.2) replaces a qemu-utils backport where one is installed; qemu-img
# and qemu-storage-daemon must come back from the same release, hence the second install.
ensure_host_tools() {
  local apt=(apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends)
  if ! command -v qemu-system-x86_64 >/dev/null; then
    log "installing qemu-system-x86"
    apt-get update -qq
    "${apt[@]}" qemu-system-x86 >/dev/null
  fi
  if ! command -v qemu-img >/dev/null || ! command -v qemu-storage-daemon >/dev/null; then
    log "installing qemu-utils"
    "${apt[@]}" qemu-utils >/dev/null
  fi
  command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing after install"
}
# docs/guests.md lists the checks; refuse to run with a stale list (cheap, catches drift in CI)
bash "$HERE/list-checks.sh" --check "$ROOT/docs/guests.md" >/dev/null
ensure_host_tools
bash "$HERE/build-guest.sh"
KERNEL=$WORK/out/vmlinux
INITRD=$WORK/out/initramfs.cpio
QBOOT=/usr/share/qemu/qboot.rom

RUN_DIR=${RUN_DIR:-$WORK/runs/$(date +%Y%m%d-%H%M%S)-$$}
mkdir -p "$RUN_DIR"
RUN_DIR=$(cd "$RUN_DIR" && pwd)
log "backend=$BACKEND run dir $RUN_DIR"

# ------------------------------------------------------------------ process bookkeeping
# Every process is started under `timeout` and recorded; cleanup() ends them by PID.
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  PIDS=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# spawn NAME TIMEOUT CMD...: start CMD in the background under timeout, log to RUN_DIR/NAME.log
spawn() {
  local name=$1 tmo=$2; shift 2
  echo "$*" > "$RUN_DIR/$name.cmd"
  timeout --kill-after=5 "$tmo" "$@" > "$RUN_DIR/$name.log" 2>&1 &
  PIDS+=($!)
  LAST_PID=$!
}
wait_socket() {  # wait_socket PATH PID
  local i
  for i in $(seq 200); do
    [ -S "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}
new_image() {  # new_image PATH MIB
  rm -f "$1"; truncate -s "${2}M" "$1"
}

# ------------------------------------------------------------------ backends
# Each controller has a function per backend that appends QEMU arguments (QARGS), kernel
# arguments (KARGS) and gaps (GAPS: checks the backend is known to fail, see docs/guests.md),
# and starts whatever daemon it needs. Switching a controller to vmstor is one function.
# Fixed PCI slots, so the guest finds each disk by its PCI function:
#   00:01.1 PIIX3 IDE (qemu)   00:02.0 x-pci-proxy-dev IDE (vmstor)   00:06.0 doorbell UART
#   00:04.0 virtio-blk / vhost-user-blk   00:05.0 virtio-scsi / vhost-user-scsi
#   00:03.0 x-pci-proxy-dev test function  00:07.0 its doorbell UART
#   00:08.0 vhost-user-blk (qemu-storage-daemon)
# A proxied function and its doorbell UART must share a PCI interrupt line: on -M pc, slot S
# pin A uses link (S-1)&3, so 2 and 6 share LNKB, 3 and 7 share LNKC.
VMSTOR_BIN=${VMSTOR_BIN:-$ROOT/target/debug/vmstor}
VMSTOR_PROXY_BIN=${VMSTOR_PROXY_BIN:-$ROOT/target/debug/vmstor-qemu-proxy}
QARGS=()
KARGS=()
GAPS=()
VMSTOR_ARGS=()     # exports for the single `vmstor serve` process (vmstor backend)
PROXIES=()         # --proxy specs for the PCI proxy launcher, which then wraps QEMU
DOORBELLS=()       # PCI functions of doorbell UARTs the guest must open first

ide_qemu() {  # $1 image
  QARGS+=(-drive "if=none,id=ide0,file=$1,format=raw,cache=writeback,aio=threads"
          -device ide-hd,drive=ide0,bus=ide.0,serial=vmstor-ide)
  KARGS+=(vmstor.pci.ide=0000:00:01.1 libata.fua=1)
  GAPS+=(ata-fua)   # QEMU's IDE has no WRITE DMA FUA EXT (IDENTIFY word 84 bit 6 clear)
}
ide_vmstor() {  # $1 image: our IDE function behind x-pci-proxy-dev, interrupts by doorbell UART
  need_proxy_bin
  QARGS+=(-chardev "socket,id=db0,path=$RUN_DIR/doorbell-ide.sock,server=on,wait=off"
          -device pci-serial,chardev=db0,addr=0x6)
  PROXIES+=(--proxy "device=ide,image=$1,cache=writeback,addr=0x2,doorbell=$RUN_DIR/doorbell-ide.sock,log=$RUN_DIR/proxy-ide.log,counters=$RUN_DIR/counters-ide.txt,trace${PROXY_VERBOSE:+,verbose}")
  DOORBELLS+=(0000:00:06.0)
  KARGS+=(vmstor.pci.ide=0000:00:02.0 libata.fua=1)
}
# The proxy's own test function (crates/qemu-proxy/src/testdev.rs): the same for both backends.
proxy_common() {
  need_proxy_bin
  QARGS+=(-chardev "socket,id=db1,path=$RUN_DIR/doorbell-test.sock,server=on,wait=off"
          -device pci-serial,chardev=db1,addr=0x7)
  PROXIES+=(--proxy "device=testdev,addr=0x3,doorbell=$RUN_DIR/doorbell-test.sock,log=$RUN_DIR/proxy-test.log")
  DOORBELLS+=(0000:00:07.0)
  # 64 KiB of RAM Linux leaves alone, for the DMA checks (reachable through /dev/mem)
  KARGS+=(vmstor.pci.proxy=0000:00:03.0 vmstor.pci.proxydb=0000:00:07.0 'memmap=64K$0x10000000'
          vmstor.dmabuf=0x10000000)
}
proxy_qemu() { proxy_common "$@"; }
proxy_vmstor() { proxy_common "$@"; }
need_proxy_bin() {
  if [ "$VMSTOR_PROXY_BIN" = "$ROOT/target/debug/vmstor-qemu-proxy" ]; then
    (cd "$ROOT" && cargo build -q -p vmstor-qemu-proxy --bin vmstor-qemu-proxy) \
      || die "cargo build -p vmstor-qemu-proxy failed"
  fi
  [ -x "$VMSTOR_PROXY_BIN" ] || die "no $VMSTOR_PROXY_BIN"
}
vblk_qemu() {
  QARGS+=(-drive "if=none,id=vblk0,file=$1,format=raw,cache=writeback,aio=threads,discard=unmap"
          -device virtio-blk-pci,drive=vblk0,addr=0x4,num-queues=$SMP,serial=vmstor-vblk)
  KARGS+=(vmstor.pci.vblk=0000:00:04.0)
}
vblk_vmstor() {
  VMSTOR_ARGS+=(--vhost-user-blk "$RUN_DIR/vblk.sock" --image "$1" --queues "$SMP")
  QARGS+=(-chardev "socket,id=vblk0,path=$RUN_DIR/vblk.sock,reconnect=1"
          -device vhost-user-blk-pci,chardev=vblk0,addr=0x4,num-queues=$SMP)
  KARGS+=(vmstor.pci.vblk=0000:00:04.0)
  WAIT_SOCKETS+=("$RUN_DIR/vblk.sock")
}
vscsi_qemu() {
  QARGS+=(-device virtio-scsi-pci,id=vscsi0,addr=0x5,num_queues=$SMP
          -drive "if=none,id=vscsid0,file=$1,format=raw,cache=writeback,aio=threads,discard=unmap"
          -device scsi-hd,drive=vscsid0,bus=vscsi0.0,scsi-id=0,lun=0,serial=vmstor-vscsi)
  KARGS+=(vmstor.pci.vscsi=0000:00:05.0)
  GAPS+=(scsi-dpofua scsi-opcodes scsi-sync16)   # scsi-hd: DPOFUA clear; no REPORT SUPPORTED
  # OPERATION CODES, no SYNCHRONIZE CACHE(16)
}
vscsi_vmstor() {
  VMSTOR_ARGS+=(--vhost-user-scsi "$RUN_DIR/vscsi.sock" --lun "$1,discard=unmap" --queues "$SMP")
  # No reconnect= here: QEMU 7.2's vhost-user-scsi-pci does not wait for the
  # connection and aborts ("Failed to set msg fds"); the socket is up first.
  QARGS+=(-chardev "socket,id=vscsi0,path=$RUN_DIR/vscsi.sock"
          -device vhost-user-scsi-pci,chardev=vscsi0,addr=0x5,num_queues=$SMP)
  KARGS+=(vmstor.pci.vscsi=0000:00:05.0)
  WAIT_SOCKETS+=("$RUN_DIR/vscsi.sock")
}
vublk_qemu() {  # qemu-storage-daemon as the vhost-user-blk backend
  local sock=$RUN_DIR/vublk.sock
  spawn qsd-vublk 600 qemu-storage-daemon \
    --blockdev "driver=file,node-name=f0,filename=$1,cache.direct=off" \
    --blockdev driver=raw,node-name=d0,file=f0 \
    --export "type=vhost-user-blk,id=e0,node-name=d0,addr.type=unix,addr.path=$sock,writable=on,num-queues=$SMP"
  wait_socket "$sock" "$LAST_PID" || { cat "$RUN_DIR/qsd-vublk.log" >&2; die "qemu-storage-daemon did not start"; }
  QARGS+=(-chardev "socket,id=vublk0,path=$sock" -device vhost-user-blk-pci,chardev=vublk0,addr=0x8,num-queues=$SMP)
  KARGS+=(vmstor.pci.vublk=0000:00:08.0)
  BACKEND_PIDS+=("$LAST_PID")
}
# The crash boot uses the vhost-user-blk export: the daemon must outlive the killed VMM.
crash_qemu() {
  local sock=$RUN_DIR/crash.sock
  spawn qsd-crash 600 qemu-storage-daemon \
    --blockdev "driver=file,node-name=f0,filename=$1,cache.direct=off" \
    --blockdev driver=raw,node-name=d0,file=f0 \
    --export "type=vhost-user-blk,id=e0,node-name=d0,addr.type=unix,addr.path=$sock,writable=on"
  wait_socket "$sock" "$LAST_PID" || { cat "$RUN_DIR/qsd-crash.log" >&2; die "qemu-storage-daemon did not start"; }
  QARGS+=(-chardev "socket,id=crash0,path=$sock" -device vhost-user-blk-pci,chardev=crash0,addr=0x4,num-queues=1)
  KARGS+=(vmstor.pci.crash=0000:00:04.0)
  BACKEND_PIDS+=("$LAST_PID")
}
crash_vmstor() {
  VMSTOR_ARGS+=(--vhost-user-blk "$RUN_DIR/crash.sock" --image "$1")
  QARGS+=(-chardev "socket,id=crash0,path=$RUN_DIR/crash.sock" -device vhost-user-blk-pci,chardev=crash0,addr=0x4,num-queues=1)
  KARGS+=(vmstor.pci.crash=0000:00:04.0)
  WAIT_SOCKETS+=("$RUN_DIR/crash.sock")
}
# Start the single `vmstor serve` process with every export the controllers asked for.
start_vmstor_serve() {
  [ ${#VMSTOR_ARGS[@]} -gt 0 ] || return 0
  [ -x "$VMSTOR_BIN" ] || die "no $VMSTOR_BIN (cargo build -p vmstor)"
  spawn "vmstor-serve-$1" 600 "$VMSTOR_BIN" serve "${VMSTOR_ARGS[@]}" --counters "$RUN_DIR/counters-$1.json"
  SERVE_STARTED=1
  local s
  for s in "${WAIT_SOCKETS[@]}"; do
    wait_socket "$s" "$LAST_PID" || { cat "$RUN_DIR/vmstor-serve-$1.log" >&2; die "vmstor serve did not create $s"; }
  done
  BACKEND_PIDS+=("$LAST_PID")
}
# Stop the backends the way an operator would (SIGTERM: finish, flush, exit) and wait for them.
stop_backends() {
  local p rc=0
  for p in "${BACKEND_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${BACKEND_PIDS[@]}"; do wait "$p" 2>/dev/null || rc=$?; done
  BACKEND_PIDS=()
  return $rc
}

# ------------------------------------------------------------------ host-side checks
# host_check_<test> runs after the guest for every test that ran; it reads the backend's
# counters/trace from RUN_DIR and reports with host_ok/host_bad. BACKEND=qemu: QEMU's trace
# (-trace events: QEMU's stderr, RUN_DIR/main-qemu.log). BACKEND=vmstor: the daemon's counters
# file (RUN_DIR/counters-main.json).
HOST_FAILS=0
host_ok() { echo "ok: [host] $*"; }
host_bad() { echo "FAIL: [host] $*"; HOST_FAILS=$((HOST_FAILS + 1)); }
QEMU_TRACE_EVENTS=(ide_exec_cmd scsi_disk_emulate_command_MODE_SELECT_10
                   scsi_disk_emulate_command_MODE_SELECT)
host_check_ide() {
  local t=$RUN_DIR/main-qemu.log c=$RUN_DIR/counters-ide.txt
  if [ "$BACKEND" = vmstor ]; then
    # the IDE remote's hostio counters (vmstor-qemu-proxy --counters)
    [ -s "$c" ] || { host_bad "ide: no counters from the IDE remote ($c)"; return; }
    local fa fs w ds; fa=$(sed -n 's/^flushes_asked=//p' "$c"); fs=$(sed -n 's/^fdatasyncs=//p' "$c")
    w=$(sed -n 's/^writes=//p' "$c"); ds=$(sed -n 's/^traced_dsync_writes=//p' "$c")
    if [ "${fa:-0}" -gt 0 ]; then host_ok "ide: guest flushes reached hostio ($fa)"; else host_bad "ide: no flush reached hostio"; fi
    if [ "${fs:-0}" -gt 0 ]; then host_ok "ide: fdatasync issued on the host ($fs)"; else host_bad "ide: no fdatasync on the host"; fi
    if [ "${w:-0}" -gt 0 ]; then host_ok "ide: writes reached hostio ($w)"; else host_bad "ide: no writes reached hostio"; fi
    # the test writes 64 KiB with the write cache off (hdparm -W0): durable on completion
    if [ "${ds:-0}" -gt 0 ]; then host_ok "ide: writes with the cache off were RWF_DSYNC ($ds)"; else host_bad "ide: no RWF_DSYNC write after hdparm -W0"; fi
    return
  fi
  # ATA opcodes QEMU executed: SET FEATURES (0xef), FLUSH CACHE EXT (0xea) / FLUSH CACHE (0xe7)
  if grep -q 'cmd 0xef' "$t"; then host_ok "ide: SET FEATURES reached the device"; else host_bad "ide: no SET FEATURES (hdparm -W0/-W1) seen"; fi
  if grep -qE 'cmd 0x(ea|e7)' "$t"; then host_ok "ide: FLUSH CACHE reached the device"; else host_bad "ide: no FLUSH CACHE seen"; fi
}
# counter EXPORT_KIND FIELD: a disk counter of the main boot's `vmstor serve` export of that
# kind (vhost-user-blk, vhost-user-scsi), from its counters file; empty when absent.
counter() {
  python3 - "$RUN_DIR/counters-main.json" "$1" "$2" <<'PY' 2>/dev/null
import json, sys
path, kind, field = sys.argv[1:4]
for e in json.load(open(path))["exports"]:
    if e["kind"] == kind:
        print(e["disks"][0][field] if field in e["disks"][0] else e[field])
PY
}
# expect_min WHAT VALUE MIN: host_ok when VALUE >= MIN
expect_min() {
  if [ "${2:-0}" -ge "$3" ] 2>/dev/null; then host_ok "$1 ($2)"; else host_bad "$1 (got '${2:-none}', want >= $3)"; fi
}
expect_zero() {
  if [ "${2:-x}" = 0 ]; then host_ok "$1"; else host_bad "$1 (got '${2:-none}')"; fi
}
host_check_vblk() {
  # QEMU's trace events cannot attribute a host flush to one device (file_paio_submit has no
  # device), so BACKEND=qemu has no vblk host check.
  [ "$BACKEND" = vmstor ] || return 0
  local k=vhost-user-blk
  expect_min "vblk: cache_type 'write through' flushed on the host (fdatasyncs)" "$(counter $k fdatasyncs)" 1
  expect_min "vblk: writes reached hostio" "$(counter $k writes)" 1
  expect_min "vblk: blkdiscard reached hostio as a discard" "$(counter $k discards)" 1
  expect_min "vblk: blkdiscard -z reached hostio as write zeroes" "$(counter $k write_zeroes)" 1
  expect_zero "vblk: no IOERR status" "$(counter $k status_ioerr)"
  expect_zero "vblk: no malformed chains" "$(counter $k bad_chains)"
}
host_check_vscsi() {
  if [ "$BACKEND" = qemu ]; then
    if grep -q 'Mode Select' "$RUN_DIR/main-qemu.log"; then host_ok "vscsi: MODE SELECT reached the disk"; else host_bad "vscsi: no MODE SELECT seen (cache_type write)"; fi
    return
  fi
  local k=vhost-user-scsi
  expect_min "vscsi: sg_sync and sg_sync --16 reached hostio as flushes" "$(counter $k flushes_asked)" 2
  expect_min "vscsi: MODE SELECT WCE=0 flushed on the host (fdatasyncs)" "$(counter $k fdatasyncs)" 1
  expect_min "vscsi: sg_unmap reached hostio as a discard" "$(counter $k discards)" 1
  expect_min "vscsi: writes reached hostio" "$(counter $k writes)" 1
  expect_zero "vscsi: no malformed chains" "$(counter $k bad_chains)"
}
host_check_counters() {  # vmstor: the counters file must exist once the daemon has exited
  [ "$BACKEND" = vmstor ] && [ "$SERVE_STARTED" = 1 ] || return 0
  if [ -s "$RUN_DIR/counters-main.json" ]; then host_ok "vmstor serve wrote its counters"; else host_bad "no counters file from vmstor serve"; fi
}

# ------------------------------------------------------------------ one QEMU boot
# boot NAME TESTS: start QEMU with QARGS/KARGS, wait for it, parse the console.
# Sets BOOT_RC (QEMU's exit status) and fills RESULTS[test]=rc from the console.
declare -A RESULTS=()
boot() {
  local name=$1 tests=$2 gaps append qemu_rc
  gaps=$(IFS=,; echo "${GAPS[*]:-}")
  local dbs; dbs=$(IFS=,; echo "${DOORBELLS[*]:-}")
  append="console=ttyS0 panic=-1 quiet loglevel=4 vmstor.tests=$tests vmstor.gaps=$gaps ${KARGS[*]}"
  [ -n "$dbs" ] && append="$append vmstor.doorbell=$dbs"
  append="$append ${GUEST_APPEND:-}"
  PRE_QEMU=()
  # VMSTOR_PROXY_HISTORY: each remote logs its last 400 messages at exit (post-mortem data)
  [ ${#PROXIES[@]} -gt 0 ] && PRE_QEMU=(env VMSTOR_PROXY_HISTORY=1 "$VMSTOR_PROXY_BIN" launch "${PROXIES[@]}" --)
  [ "$SHELL_MODE" = 1 ] && append="$append vmstor.shell=1"
  local q=(qemu-system-x86_64 -accel tcg -M pc -nodefaults -display none -no-reboot
           -bios "$QBOOT" -m 512 -smp "$SMP"
           -object memory-backend-memfd,id=mem,size=512M,share=on -numa node,memdev=mem
           -device isa-debug-exit,iobase=0xf4,iosize=0x04
           -kernel "$KERNEL" -initrd "$INITRD" -append "$append" "${QARGS[@]}")
  if [ "$BACKEND" = qemu ]; then
    local e; for e in "${QEMU_TRACE_EVENTS[@]}"; do q+=(-trace "enable=$e"); done
  fi
  if [ "$SHELL_MODE" = 1 ]; then
    log "interactive guest shell; exit the shell to power off (Ctrl-A x quits QEMU)"
    timeout --foreground "${SHELL_TIMEOUT:-3600}" "${PRE_QEMU[@]}" "${q[@]}" -serial mon:stdio || true
    return 0
  fi
  q+=(-serial stdio)
  echo "${PRE_QEMU[*]} ${q[*]}" > "$RUN_DIR/$name-qemu.cmd"
  local t0=$(date +%s.%N)
  set +e
  if [ "$name" = crash ]; then
    boot_crash "${q[@]}"; qemu_rc=$?
  else
    timeout --kill-after=5 "$QEMU_TIMEOUT" "${PRE_QEMU[@]}" "${q[@]}" \
      > "$RUN_DIR/$name-console.log" 2> "$RUN_DIR/$name-qemu.log" < /dev/null
    qemu_rc=$?
  fi
  set -e
  BOOT_WALL=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  BOOT_RC=$qemu_rc
  local line t rc
  while read -r line; do
    t=$(echo "$line" | sed -n 's/^VMSTOR-RESULT \([^ ]*\) rc=\([0-9]*\).*/\1/p')
    rc=$(echo "$line" | sed -n 's/^VMSTOR-RESULT \([^ ]*\) rc=\([0-9]*\).*/\2/p')
    [ -n "$t" ] && RESULTS[$t]=$rc
  done < <(tr -d '\r' < "$RUN_DIR/$name-console.log" | grep '^VMSTOR-RESULT' || true)
  grep -aE '^(ok|FAIL|XFAIL|XPASS)' "$RUN_DIR/$name-console.log" | tr -d '\r' || true
  log "$name boot: QEMU exit $qemu_rc, ${BOOT_WALL} s"
}

# crash boot: wait for the guest to report its pattern fsynced, SIGKILL QEMU, stop the
# backend, then check the image.
boot_crash() {
  local log=$RUN_DIR/crash-console.log qpid i
  rm -f "$RUN_DIR/crash-qemu.pid"
  timeout --kill-after=5 "$QEMU_TIMEOUT" "${PRE_QEMU[@]}" "$@" -pidfile "$RUN_DIR/crash-qemu.pid" \
    > "$log" 2> "$RUN_DIR/crash-qemu.log" < /dev/null &
  qpid=$!
  PIDS+=("$qpid")
  for i in $(seq $((QEMU_TIMEOUT * 10))); do
    grep -aq '^VMSTOR-CRASH-READY' "$log" && break
    kill -0 "$qpid" 2>/dev/null || break
    sleep 0.1
  done
  grep -aq '^VMSTOR-CRASH-READY' "$log" || { wait "$qpid"; return 1; }
  sleep 0.5   # let the guest's unsynced writes be in flight
  # SIGKILL the VMM itself (QEMU's own pid, from -pidfile); its timeout wrapper then exits.
  kill -KILL "$(cat "$RUN_DIR/crash-qemu.pid")" 2>/dev/null || true
  wait "$qpid" 2>/dev/null || true
  return 137
}

# ------------------------------------------------------------------ the runs
declare -A AVAILABLE=([qemu]="ide vblk vscsi vublk proxy" [vmstor]="ide vblk vscsi proxy")
[ -n "${AVAILABLE[$BACKEND]:-}" ] || die "unknown backend $BACKEND"
USER_TESTS=$TESTS
[ -n "$TESTS" ] || TESTS=$(echo ${AVAILABLE[$BACKEND]} | tr ' ' ,)
PASSED=0
FAILED=0
FAILED_NAMES=()
BACKEND_PIDS=()
WAIT_SOCKETS=()
SERVE_STARTED=0
SHOW_LOGS=0
RUN_T0=$(date +%s.%N)

if [ "$DO_MAIN" = 1 ]; then
  for t in $(echo "$TESTS" | tr , ' '); do
    case " ${AVAILABLE[$BACKEND]} " in *" $t "*) ;; *) die "backend $BACKEND has no test $t";; esac
    [ "$t" = proxy ] || new_image "$RUN_DIR/$t.img" 128
    "${t}_${BACKEND}" "$RUN_DIR/$t.img"
  done
  [ "$BACKEND" = vmstor ] && start_vmstor_serve main
  if [ "$SHELL_MODE" = 1 ]; then boot main "${USER_TESTS:-none}"; exit 0; fi
  boot main "$TESTS"
  stop_backends || log "a backend exited non-zero"
  for t in $(echo "$TESTS" | tr , ' '); do
    if [ "${RESULTS[$t]:-x}" = 0 ]; then PASSED=$((PASSED + 1)); else FAILED=$((FAILED + 1)); FAILED_NAMES+=("$t(rc=${RESULTS[$t]:-none})"); fi
    if declare -F "host_check_$t" >/dev/null; then "host_check_$t"; fi
  done
  host_check_counters
  # isa-debug-exit: QEMU exits with (failed<<1)|1; anything else means the guest never got there
  if [ "$BOOT_RC" != $(( (FAILED << 1) | 1 )) ]; then
    log "main boot: QEMU exit status $BOOT_RC does not match $FAILED failed tests (timeout=124/137, panic/poweroff=0)"
    [ "$FAILED" -gt 0 ] || { FAILED=$((FAILED + 1)); FAILED_NAMES+=("main-boot(qemu=$BOOT_RC)"); }
    SHOW_LOGS=1
  fi
  [ "$FAILED" = 0 ] || SHOW_LOGS=1
  MAIN_WALL=$BOOT_WALL
  QARGS=(); KARGS=(); GAPS=(); VMSTOR_ARGS=(); PROXIES=(); DOORBELLS=(); WAIT_SOCKETS=()
fi

if [ "$DO_CRASH" = 1 ]; then
  img=$RUN_DIR/crash.img
  new_image "$img" 64
  seed=$(( $(date +%s) % 1000000 ))
  blocks=512
  KARGS+=(vmstor.seed=$seed vmstor.blocks=$blocks)
  "crash_$BACKEND" "$img"
  [ "$BACKEND" = vmstor ] && start_vmstor_serve crash
  boot crash crash || true
  crash_ok=1
  if ! grep -aq '^VMSTOR-CRASH-READY' "$RUN_DIR/crash-console.log"; then
    log "crash boot: the guest never reported its pattern fsynced"; crash_ok=0
  fi
  stop_backends || { log "crash boot: the backend exited non-zero after the VMM was killed"; crash_ok=0; }
  if [ $crash_ok = 1 ]; then
    want=$(awk -v seed="$seed" -v first=0 -v count="$blocks" -f "$HERE/guest/pattern.awk" | md5sum)
    got=$(dd if="$img" bs=4096 count="$blocks" 2>/dev/null | md5sum)
    if [ "$want" = "$got" ]; then
      host_ok "crash: all $blocks fsynced blocks are in the image after SIGKILL of QEMU"
    else
      bad=$(cmp <(awk -v seed="$seed" -v first=0 -v count="$blocks" -f "$HERE/guest/pattern.awk") \
                <(dd if="$img" bs=4096 count="$blocks" 2>/dev/null) | head -1)
      host_bad "crash: fsynced data missing from the image ($bad)"; crash_ok=0
    fi
  fi
  if [ $crash_ok = 1 ]; then PASSED=$((PASSED + 1)); else FAILED=$((FAILED + 1)); FAILED_NAMES+=(crash); SHOW_LOGS=1; fi
  CRASH_WALL=$BOOT_WALL
fi

if [ "$HOST_FAILS" -gt 0 ]; then
  FAILED=$((FAILED + 1)); FAILED_NAMES+=("host-checks($HOST_FAILS)"); SHOW_LOGS=1
fi
if [ "$SHOW_LOGS" = 1 ]; then
  for f in "$RUN_DIR"/*-console.log "$RUN_DIR"/*-qemu.log "$RUN_DIR"/qsd-*.log "$RUN_DIR"/vmstor-serve-*.log "$RUN_DIR"/proxy-*.log; do
    [ -s "$f" ] || continue
    echo "=================== $f" >&2
    tr -d '\r' < "$f" | tail -n 400 >&2
  done
fi
log "backend=$BACKEND main boot ${MAIN_WALL:-skipped} s, crash boot ${CRASH_WALL:-skipped} s," \
    "total $(awk -v a="$RUN_T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s; logs in $RUN_DIR"
[ "$FAILED" = 0 ] || log "failed: ${FAILED_NAMES[*]}"
echo "guest: $PASSED passed, $FAILED failed"
if [ "$FAILED" = 0 ] && [ "$KEEP" = 0 ]; then rm -f "$RUN_DIR"/*.img; fi
[ "$FAILED" = 0 ]

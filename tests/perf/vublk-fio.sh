#!/bin/bash
# vublk-fio.sh - in-guest fio through vhost-user-blk: `vmstor serve` against
# `qemu-storage-daemon --export type=vhost-user-blk`, on the same image, in the same run.
# A measurement, not a test: nothing here is a CI gate. See docs/performance.md ("In-guest fio").
#
# Usage: tests/perf/vublk-fio.sh [options]
#   --backends a,b,...   backends, booted in this order in every repetition (A B A B ...);
#                        default vmstor,qsd. Known:
#       vmstor     vmstor serve --cache none             (O_DIRECT on the host)
#       qsd        qemu-storage-daemon, file driver, cache.direct=on
#       vmstor-wb  vmstor serve --cache writeback        (host page cache)
#       qsd-wb     qemu-storage-daemon, cache.direct=off
#   --reps N             repetitions (default 3)
#   --runtime S          measured seconds per fio job (default 10)
#   --ramp S             fio --ramp_time per job, not measured (default 2)
#   --jobs LIST          RW:QD list (default randread:1,randread:32,randwrite:1,randwrite:32)
#   --size MiB           image size, preallocated and written (default 1024)
#   --queues N           virtqueues of the vhost-user-blk device (default 2)
#   --keep               keep the image after the run
# Environment: VMSTOR_BIN (default: `cargo build --release -p vmstor`, then
#   ${CARGO_TARGET_DIR:-target}/release/vmstor), GUEST_SMP (default 2), GUEST_MEM (MiB,
#   default 512), PERF_WORK (default tests/perf/work; the image lives there: it must not be
#   tmpfs), GUEST_WORK (guest cache of tests/guest/build-guest.sh).
# Output: one line per fio job and boot while running, then a table (medians and every run) on
# stdout; RUN_DIR (PERF_WORK/runs/<time>) keeps the consoles, logs, fio JSON, results.tsv and
# summary.md. Exits non-zero if any boot or fio job failed (the table then covers what worked).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BACKENDS=vmstor,qsd
REPS=3
RUNTIME=10
RAMP=2
JOBS=randread:1,randread:32,randwrite:1,randwrite:32
SIZE=1024
QUEUES=2
KEEP=0
while [ $# -gt 0 ]; do
  case $1 in
    --backends) BACKENDS=$2; shift;;
    --reps) REPS=$2; shift;;
    --runtime) RUNTIME=$2; shift;;
    --ramp) RAMP=$2; shift;;
    --jobs) JOBS=$2; shift;;
    --size) SIZE=$2; shift;;
    --queues) QUEUES=$2; shift;;
    --keep) KEEP=1;;
    -h|--help) sed -n '2,29p' "$0"; exit 0;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
  shift
done
SMP=${GUEST_SMP:-2}
MEM=${GUEST_MEM:-512}
log() { echo ">> perf: $*" >&2; }
die() { echo "!! perf: $*" >&2; exit 1; }
for n in "$REPS" "$RUNTIME" "$RAMP" "$SIZE" "$QUEUES" "$SMP" "$MEM"; do
  case $n in ''|*[!0-9]*) die "not a number: '$n'";; esac
done
for b in $(echo "$BACKENDS" | tr , ' '); do
  case $b in vmstor|qsd|vmstor-wb|qsd-wb) ;; *) die "unknown backend $b";; esac
done
NJOBS=$(echo "$JOBS" | tr , '\n' | grep -c .)

# ------------------------------------------------------------------ host tools
# As tests/guest/run.sh: Debian's qemu-system-x86 (7.2) replaces a qemu-utils backport, and
# qemu-storage-daemon must come back from the same release, hence the second install.
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
  command -v qemu-storage-daemon >/dev/null || die "qemu-storage-daemon missing after install"
  command -v python3 >/dev/null || die "python3 is needed for the summary"
}
ensure_host_tools

# ------------------------------------------------------------------ binaries and guest
if [ -z "${VMSTOR_BIN:-}" ]; then
  log "cargo build --release -p vmstor"
  (cd "$ROOT" && cargo build -q --release -p vmstor) || die "cargo build --release -p vmstor failed"
  VMSTOR_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/vmstor
fi
[ -x "$VMSTOR_BIN" ] || die "no $VMSTOR_BIN"

GUEST_WORK=${GUEST_WORK:-$ROOT/tests/guest/work}
export GUEST_WORK
bash "$ROOT/tests/guest/build-guest.sh"
PERF_WORK=${PERF_WORK:-$HERE/work}
RUN_DIR=${RUN_DIR:-$PERF_WORK/runs/$(date +%Y%m%d-%H%M%S)-$$}
mkdir -p "$RUN_DIR/fio"
RUN_DIR=$(cd "$RUN_DIR" && pwd)
fstype=$(findmnt -n -o FSTYPE -T "$RUN_DIR" 2>/dev/null || stat -f -c %T "$RUN_DIR")
case $fstype in tmpfs|ramfs) die "$RUN_DIR is on $fstype: the image must be on a real filesystem (set PERF_WORK)";; esac

# The guest: tests/guest's kernel and initramfs, plus one more newc archive carrying
# /tests/perf.sh (the kernel unpacks concatenated archives in turn). Copied into RUN_DIR at
# once, so a concurrent tests/guest build cannot change it under this run.
cp "$GUEST_WORK/out/vmlinux" "$RUN_DIR/vmlinux"
BB=$GUEST_WORK/x/bin/busybox
[ -x "$BB" ] || die "no busybox in $GUEST_WORK/x (build-guest.sh did not unpack?)"
L=$RUN_DIR/layer
rm -rf "$L"; mkdir -p "$L/tests"
install -m 0755 "$HERE/guest/perf.sh" "$L/tests/perf.sh"
( cd "$L" && find . -mindepth 1 | LC_ALL=C sort | "$BB" cpio -o -H newc 2>/dev/null ) > "$RUN_DIR/perf.cpio"
cat "$GUEST_WORK/out/initramfs.cpio" "$RUN_DIR/perf.cpio" > "$RUN_DIR/initramfs.cpio"
rm -rf "$L" "$RUN_DIR/perf.cpio"

# ------------------------------------------------------------------ process bookkeeping
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
  if [ "$KEEP" = 0 ]; then rm -f "$RUN_DIR/perf.img"; fi
  rm -f "$RUN_DIR/initramfs.cpio" "$RUN_DIR/vmlinux"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
wait_socket() {  # wait_socket PATH PID
  local i
  for i in $(seq 200); do
    [ -S "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

# ------------------------------------------------------------------ the image
# Preallocated AND written (zeros through O_DIRECT): fallocate alone leaves unwritten extents,
# which ext4 answers without reading the device and converts on the first write to each.
IMG=$RUN_DIR/perf.img
log "writing a ${SIZE} MiB image ($fstype, $IMG)"
dd if=/dev/zero of="$IMG" bs=1M count="$SIZE" oflag=direct conv=fsync status=none

# ------------------------------------------------------------------ one boot
QEMU_TIMEOUT=$(( 90 + NJOBS * (RUNTIME + RAMP + 15) ))
BACKEND_TIMEOUT=$(( QEMU_TIMEOUT + 60 ))
# start_backend NAME TAG SOCK: start the daemon under timeout; sets BPID.
start_backend() {
  local name=$1 tag=$2 sock=$3
  local logf=$RUN_DIR/$tag-backend.log cmd
  rm -f "$sock"
  case $name in
    vmstor|vmstor-wb)
      local cache=none; [ "$name" = vmstor-wb ] && cache=writeback
      cmd=("$VMSTOR_BIN" serve --vhost-user-blk "$sock" --image "$IMG" --cache "$cache"
           --queues "$QUEUES" --counters "$RUN_DIR/$tag-counters.json");;
    qsd|qsd-wb)
      local direct=on; [ "$name" = qsd-wb ] && direct=off
      cmd=(qemu-storage-daemon
           --blockdev "driver=file,filename=$IMG,cache.direct=$direct,node-name=f"
           --export "type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path=$sock,writable=on,num-queues=$QUEUES");;
  esac
  echo "${cmd[*]}" > "$RUN_DIR/$tag-backend.cmd"
  timeout --kill-after=5 "$BACKEND_TIMEOUT" "${cmd[@]}" > "$logf" 2>&1 &
  BPID=$!
  PIDS+=("$BPID")
  wait_socket "$sock" "$BPID" || { cat "$logf" >&2; return 1; }
}
# stop_backend: SIGTERM (both daemons finish, flush and exit 0 on it), then wait.
stop_backend() {
  local rc=0
  kill -TERM "$BPID" 2>/dev/null || true
  wait "$BPID" 2>/dev/null || rc=$?
  return $rc
}
# boot TAG SOCK: QEMU TCG with one vhost-user-blk-pci disk at 00:04.0; console to TAG-console.log
boot() {
  local tag=$1 sock=$2 append
  append="console=ttyS0 panic=-1 quiet loglevel=4 vmstor.tests=perf vmstor.pci.perf=0000:00:04.0"
  append="$append vmstor.perf.jobs=$JOBS vmstor.perf.runtime=$RUNTIME vmstor.perf.ramp=$RAMP"
  append="$append vmstor.perf.size=$SIZE ${GUEST_APPEND:-}"
  local q=(qemu-system-x86_64 -accel tcg -M pc -nodefaults -display none -no-reboot
           -bios /usr/share/qemu/qboot.rom -m "$MEM" -smp "$SMP"
           -object "memory-backend-memfd,id=mem,size=${MEM}M,share=on" -numa node,memdev=mem
           -device isa-debug-exit,iobase=0xf4,iosize=0x04
           -kernel "$RUN_DIR/vmlinux" -initrd "$RUN_DIR/initramfs.cpio" -append "$append"
           -chardev "socket,id=vu0,path=$sock"
           -device "vhost-user-blk-pci,chardev=vu0,addr=0x4,num-queues=$QUEUES"
           -serial stdio)
  echo "${q[*]}" > "$RUN_DIR/$tag-qemu.cmd"
  local rc=0
  timeout --kill-after=5 "$QEMU_TIMEOUT" "${q[@]}" \
    > "$RUN_DIR/$tag-console.log" 2> "$RUN_DIR/$tag-qemu.log" < /dev/null &
  local qpid=$!
  PIDS+=("$qpid")
  wait "$qpid" || rc=$?
  return $rc
}
# extract TAG REP BACKEND: split the console's fio JSON into RUN_DIR/fio/REP-BACKEND-RW-qdQD.json
extract() {
  tr -d '\r' < "$RUN_DIR/$1-console.log" | awk -v dir="$RUN_DIR/fio" -v rep="$2" -v be="$3" '
    /^VMSTOR-PERF-BEGIN / { f = dir "/" rep "-" be "-" $2 "-qd" $3 ".json"; printf "" > f; next }
    /^VMSTOR-PERF-END / { if (f != "") close(f); f = ""; next }
    f != "" { print >> f }'
}

# ------------------------------------------------------------------ the runs
RESULTS=$RUN_DIR/results.tsv
printf 'rep\tbackend\trw\tqd\tiops\tlat_mean_us\tclat_p50_us\tclat_p99_us\tloadavg_before\tloadavg_after\n' > "$RESULTS"
FAILS=0
T0=$(date +%s)
log "run dir $RUN_DIR; backends $BACKENDS x $REPS reps; jobs $JOBS; ${RUNTIME}s (+${RAMP}s ramp) each;" \
    "guest -smp $SMP -m $MEM, $QUEUES queues"
for rep in $(seq "$REPS"); do
  for be in $(echo "$BACKENDS" | tr , ' '); do
    tag=$rep-$be
    sock=$RUN_DIR/$be.sock
    load0=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' /)
    t0=$(date +%s.%N)
    if ! start_backend "$be" "$tag" "$sock"; then
      log "$tag: the backend did not start"; FAILS=$((FAILS + 1)); continue
    fi
    qrc=0; boot "$tag" "$sock" || qrc=$?
    brc=0; stop_backend || brc=$?
    load1=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' /)
    wall=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    # isa-debug-exit: (failed tests << 1) | 1; the perf test is the only one, so 1 = it passed
    if [ "$qrc" != 1 ]; then
      log "$tag: QEMU exit $qrc (1 = guest test passed; 3 = a fio job failed; 124/137 = timeout)"
      tr -d '\r' < "$RUN_DIR/$tag-console.log" | grep -aE '^(FAIL|    \|)' >&2 || true
      FAILS=$((FAILS + 1))
    fi
    if [ "$brc" != 0 ]; then
      log "$tag: backend exited $brc after SIGTERM"; tail -5 "$RUN_DIR/$tag-backend.log" >&2
      FAILS=$((FAILS + 1))
    fi
    extract "$tag" "$rep" "$be"
    python3 "$HERE/fio-table.py" row "$RUN_DIR/fio" "$rep" "$be" "$load0" "$load1" >> "$RESULTS" \
      || { log "$tag: no fio results"; FAILS=$((FAILS + 1)); }
    log "$tag: ${wall}s, load $load0 -> $load1: $(awk -F'\t' -v r="$rep" -v b="$be" \
        '$1 == r && $2 == b { printf "%s QD%s %.0f IOPS %.0f us; ", $3, $4, $5, $6 }' "$RESULTS")"
  done
done
T1=$(date +%s)

{
  echo "vublk-fio: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(( T1 - T0 )) s; $REPS reps of $BACKENDS;" \
       "jobs $JOBS, 4 KiB, ${RUNTIME}s + ${RAMP}s ramp; ${SIZE} MiB image on $fstype;" \
       "guest -smp $SMP -m $MEM, $QUEUES queues; host $(nproc) CPUs, $(uname -r)"
  echo "vmstor: $("$VMSTOR_BIN" --version 2>/dev/null || echo "$VMSTOR_BIN"); $(qemu-storage-daemon --version | head -1)"
  echo
  python3 "$HERE/fio-table.py" table "$RESULTS" "$BACKENDS"
} | tee "$RUN_DIR/summary.md"
log "logs, consoles and fio JSON in $RUN_DIR"
[ "$FAILS" = 0 ] || { log "$FAILS failures"; exit 1; }

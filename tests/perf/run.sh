#!/bin/bash
# vmstor performance suite (issue 9 part 2): one command runs everything and
# writes a markdown report.
#
#   tests/perf/run.sh            # full run, about 10 minutes on 2 vCPUs
#   REPS=1 SECS=2 tests/perf/run.sh   # quick look
#
# Runs, REPS times each (the report shows medians):
#   1. criterion: crates/vmstor/benches/frontends.rs (model overhead per 4 KiB
#      read on the null backend: virtio-blk, virtio-scsi, IDE; engine alone)
#   2. 4 KiB random read/write at QD1 and QD32 through virtio-blk on a 1 GiB
#      preallocated O_DIRECT file (examples/perf.rs `io`), interleaved with
#      fio (io_uring, direct=1) on the same file, same block size and depth
#   3. flush storm: 32 streams of write+flush, engine group commit vs
#      32 threads of pwrite+fdatasync (`flushstorm`); the engine also with
#      2 and 4 fdatasyncs in flight (`--max-syncs`)
#   4. FUA as RWF_DSYNC vs write+fdatasync, writeback and none, with 4 MiB of
#      unrelated dirty data before each batch (`fua`)
#   5. 64 KiB sequential writes, stable_writes=bounce vs trust (`io --seq`)
#
# Environment:
#   REPS=3                repetitions of every measurement
#   SECS=5                seconds per timed run (fio: same, plus 1 s ramp)
#   PERF_DIR=/var/tmp/vmstor-perf   where the 1 GiB image lives (root fs)
#   VMSTOR_PERF_EXECUTORS="threads uring uring+poll30"  hostio executors compared
#                         in step 2 (inline | threads[:N] | uring[:N], `+pollUS`:
#                         DiskOptions::poll_us); QD1 also runs inline
#   VMSTOR_PERF_EXECUTOR=uring      executor for step 5
#   CARGO_TARGET_DIR      as usual (use a separate one on a shared machine)
#   SKIP_CRITERION=1      skip step 1
# Output: tests/perf/results/<date>.md (and .jsonl with every raw result);
# the markdown is also printed.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
REPS=${REPS:-3}
SECS=${SECS:-5}
PERF_DIR=${PERF_DIR:-/var/tmp/vmstor-perf}
# Executors compared in step 2 (space-separated); QD1 also runs inline.
EXECUTORS=${VMSTOR_PERF_EXECUTORS:-threads uring uring+poll30}
EXECUTOR=${VMSTOR_PERF_EXECUTOR:-uring}
STAMP=$(date +%Y-%m-%d-%H%M)
OUT_DIR="$ROOT/tests/perf/results"
RAW="$OUT_DIR/$STAMP.jsonl"
MD="$OUT_DIR/$STAMP.md"
IMG="$PERF_DIR/perf.img"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
mkdir -p "$OUT_DIR" "$PERF_DIR"
: > "$RAW"

log() { echo "[perf $(date +%T)] $*" >&2; }
emit() { echo "$1" >> "$RAW"; }

# ---- machine -----------------------------------------------------------------
FSTYPE=$(findmnt -T "$PERF_DIR" -n -o FSTYPE 2>/dev/null || stat -f -c %T "$PERF_DIR")
FSSRC=$(findmnt -T "$PERF_DIR" -n -o SOURCE 2>/dev/null || echo "?")
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
emit "$(jq -nc --arg nproc "$(nproc)" --arg cpu "$CPU" --arg kernel "$(uname -r)" \
  --arg fs "$FSTYPE on $FSSRC ($PERF_DIR)" --arg mem "$(free -g | awk '/Mem:/{print $2" GiB"}')" \
  --arg commit "$(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
  --arg reps "$REPS" --arg secs "$SECS" --arg executor "$EXECUTORS" \
  '{bench:"machine",nproc:$nproc,cpu:$cpu,kernel:$kernel,fs:$fs,mem:$mem,commit:$commit,reps:$reps,secs:$secs,executor:$executor}')"

# ---- tools -------------------------------------------------------------------
if ! command -v fio >/dev/null; then
  log "installing fio"
  (apt-get update -qq && apt-get install -y -qq fio) >/dev/null 2>&1 || true
fi
command -v fio >/dev/null || log "fio missing: the fio columns stay empty"

log "building (release)"
cargo build --release -q -p vmstor --example perf
PERF="$TARGET/release/examples/perf"

# ---- 1. criterion ------------------------------------------------------------
if [ "${SKIP_CRITERION:-0}" != 1 ]; then
  for rep in $(seq "$REPS"); do
    log "criterion frontends ($rep/$REPS)"
    cargo bench -q -p vmstor --bench frontends -- --warm-up-time 1 --measurement-time 3 >&2
    # criterion stores "group/name" as criterion/group_name/
    for est in "$TARGET"/criterion/*/new/estimates.json; do
      name=$(basename "$(dirname "$(dirname "$est")")")
      case "$name" in engine_*|model_*|driver_*) name=${name/_//} ;; *) continue ;; esac
      emit "$(jq -c --arg name "$name" '{bench:"criterion",name:$name,median_ns:.median.point_estimate,mean_ns:.mean.point_estimate}' "$est")"
    done
  done
fi

# ---- image -------------------------------------------------------------------
if [ ! -f "$IMG" ] || [ "$(stat -c %s "$IMG")" != $((1 << 30)) ]; then
  log "writing a 1 GiB preallocated image $IMG"
  rm -f "$IMG"
  # Written (not just fallocated): unwritten extents read as zeroes without
  # touching the device, which would flatter reads.
  dd if=/dev/zero of="$IMG" bs=1M count=1024 oflag=direct status=none
  sync
fi

fio_run() { # rw qd
  command -v fio >/dev/null || return 0
  local j
  j=$(fio --name=perf --filename="$IMG" --size=1G --bs=4k --rw="$1" --ioengine=io_uring \
      --iodepth="$2" --direct=1 --time_based --runtime="$SECS" --ramp_time=1 \
      --randrepeat=0 --norandommap --group_reporting --output-format=json 2>/dev/null)
  local dir=read; [ "$1" = randwrite ] && dir=write
  emit "$(echo "$j" | jq -c --arg rw "$1" --arg qd "$2" --arg d "$dir" '.jobs[0][$d] as $x |
    {bench:"fio",rw:($rw|sub("rand";"")),qd:($qd|tonumber),iops:$x.iops,
     mean_us:($x.lat_ns.mean/1000),p50_us:($x.clat_ns.percentile["50.000000"]/1000),
     p99_us:($x.clat_ns.percentile["99.000000"]/1000)}')"
}

# ---- 2. through the stack vs fio ---------------------------------------------
for rep in $(seq "$REPS"); do
  for rw in read write; do
    for qd in 1 32; do
      log "rand$rw QD$qd ($rep/$REPS): fio, vmstor ($EXECUTORS)"
      fio_run "rand$rw" "$qd"
      exs=$EXECUTORS
      [ "$qd" = 1 ] && exs="$exs inline"
      for ex in $exs; do
        emit "$("$PERF" io --file "$IMG" --rw "$rw" --qd "$qd" --executor "$ex" --secs "$SECS")"
      done
    done
  done
done

# ---- 3. flush storm ----------------------------------------------------------
for rep in $(seq "$REPS"); do
  for mode in engine naive; do
    log "flush storm $mode ($rep/$REPS)"
    emit "$("$PERF" flushstorm --file "$IMG" --mode "$mode" --streams 32 --secs "$SECS")"
  done
  for n in 2 4; do
    log "flush storm engine, $n syncs in flight ($rep/$REPS)"
    emit "$("$PERF" flushstorm --file "$IMG" --mode engine --max-syncs "$n" --streams 32 --secs "$SECS")"
  done
done

# ---- 4. FUA ------------------------------------------------------------------
for rep in $(seq "$REPS"); do
  for cache in writeback none; do
    for method in dsync fdatasync; do
      log "FUA $cache $method ($rep/$REPS)"
      emit "$("$PERF" fua --file "$IMG" --cache "$cache" --method "$method" --dirty-mib 4 --batches 25 --batch 8)"
    done
  done
done

# ---- 5. stable writes bounce -------------------------------------------------
for rep in $(seq "$REPS"); do
  for qd in 1 8; do
    for stable in bounce trust; do
      log "64 KiB seq write QD$qd stable_writes=$stable ($rep/$REPS)"
      emit "$("$PERF" io --file "$IMG" --rw write --seq --bs 65536 --qd "$qd" --stable "$stable" --executor "$EXECUTOR" --secs "$SECS")"
    done
  done
done

python3 "$ROOT/tests/perf/report.py" "$RAW" > "$MD"
cat "$MD"
log "wrote $MD (raw: $RAW)"

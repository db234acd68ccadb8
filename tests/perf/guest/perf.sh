#!/bin/sh
# perf.sh - in-guest fio benchmark for tests/perf/vublk-fio.sh (runs as /tests/perf.sh under
# tests/guest's /init, which sources nothing for us: /lib/vmstor.sh is sourced below).
#
# Kernel command line (set by vublk-fio.sh):
#   vmstor.pci.perf=BDF        PCI function of the disk under test (vhost-user-blk-pci)
#   vmstor.perf.jobs=a,b,...   jobs as RW:QD, e.g. randread:1,randread:32,randwrite:1,randwrite:32
#   vmstor.perf.runtime=S      measured seconds per job (fio --runtime, after --ramp_time)
#   vmstor.perf.ramp=S         seconds per job fio runs before it starts measuring
#   vmstor.perf.size=MiB       region of the disk the random offsets cover (from offset 0)
#
# Console protocol (read by vublk-fio.sh):
#   VMSTOR-PERF-INFO key=value ...          what the guest sees (queues, cache, scheduler)
#   VMSTOR-PERF-BEGIN <rw> <qd>             then fio's --output-format=json, then
#   VMSTOR-PERF-END <rw> <qd> rc=<n>
# The checks (ok:/FAIL:) go through /lib/vmstor.sh, so a failed fio fails the test's rc.
. /lib/vmstor.sh
# Kernel messages on the console would land in the middle of the JSON: keep them off it.
dmesg -n 1
need_disk perf

jobs=$(arg vmstor.perf.jobs "randread:1,randread:32,randwrite:1,randwrite:32")
runtime=$(arg vmstor.perf.runtime 10)
ramp=$(arg vmstor.perf.ramp 2)
size=$(arg vmstor.perf.size 1024)
dev_mib=$(( $(cat /sys/block/$DISK/size) / 2048 ))
[ "$size" -le "$dev_mib" ] || size=$dev_mib

# The same block-layer setup whatever the backend: no I/O scheduler, no read-ahead (O_DIRECT
# does not use it anyway), no entropy accounting.
echo none > /sys/block/$DISK/queue/scheduler 2>/dev/null
echo 0 > /sys/block/$DISK/queue/add_random 2>/dev/null
nq=$(ls -d /sys/block/$DISK/mq/* 2>/dev/null | wc -l)
echo "VMSTOR-PERF-INFO dev=$DEV size_mib=$dev_mib region_mib=$size queues=$nq" \
  "cache_type=$(tr ' ' _ < /sys/block/$DISK/cache_type 2>/dev/null)" \
  "scheduler=$(cat /sys/block/$DISK/queue/scheduler | tr ' ' _)" \
  "nproc=$(nproc) kernel=$(uname -r) fio=$(fio --version)"

for j in $(echo "$jobs" | tr , ' '); do
  rw=${j%%:*}; qd=${j#*:}
  echo "VMSTOR-PERF-BEGIN $rw $qd"
  # fio's JSON goes to a file first: only that file reaches the console between the markers.
  fio --name="$rw-qd$qd" --filename="$DEV" --ioengine=libaio --direct=1 --bs=4k --rw="$rw" \
    --iodepth="$qd" --numjobs=1 --time_based --runtime="$runtime" --ramp_time="$ramp" \
    --size="${size}M" --norandommap --randrepeat=0 --percentile_list=50:99:99.9 \
    --output-format=json --output=/tmp/fio.json > /tmp/fio.err 2>&1
  rc=$?
  [ $rc = 0 ] && cat /tmp/fio.json
  echo "VMSTOR-PERF-END $rw $qd rc=$rc"
  [ $rc = 0 ] || sed 's/^/    | /' /tmp/fio.err | tail -15
  result "" "fio $rw 4 KiB QD$qd ${runtime}s on $DEV" $rc "fio exited $rc"
done
finish

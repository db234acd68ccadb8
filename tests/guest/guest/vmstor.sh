# /lib/vmstor.sh - helpers sourced by the guest tests (tests/guest/tests/*.sh).
#
# Every check prints one line: "ok: <what>", "FAIL: <what>: <why>", or for a check tagged with a
# gap the run declared (vmstor.gaps=a,b on the command line: features the backend under test is
# known to lack, e.g. QEMU's own devices), "XFAIL[<gap>]: ..." / "XPASS[<gap>]: ...".
# `finish` exits with the number of failed checks, so the test's rc is 0 only if all passed.
FAILS=0
CHECKS=0
TEST_NAME=${1:-$(basename "$0" .sh)}
arg() { for a in $(cat /proc/cmdline); do case $a in "$1"=*) echo "${a#*=}"; return;; esac; done; echo "$2"; }
say() { echo "[$TEST_NAME] $*"; }
up() { cut -d" " -f1 /proc/uptime; }
ok() { CHECKS=$((CHECKS + 1)); echo "ok: [$TEST_NAME] $1 (at $(up)s)"; }
bad() { CHECKS=$((CHECKS + 1)); FAILS=$((FAILS + 1)); echo "FAIL: [$TEST_NAME] $1: $2 (at $(up)s)"; }
# has_gap TAG: did the run declare that the backend lacks TAG?
has_gap() { case ",$(arg vmstor.gaps ""),"  in *",$1,"*) return 0;; esac; return 1; }
# result GAP WHAT COND-RC WHY: record a check whose outcome is COND-RC (0 = passed).
result() {
  if [ -n "$1" ] && has_gap "$1"; then
    CHECKS=$((CHECKS + 1))
    if [ "$3" = 0 ]; then echo "XPASS[$1]: [$TEST_NAME] $2 (at $(up)s)"; else echo "XFAIL[$1]: [$TEST_NAME] $2: $4 (at $(up)s)"; fi
  elif [ "$3" = 0 ]; then ok "$2"
  else bad "$2" "$4"
  fi
}
# check_eq [-g GAP] WHAT GOT WANT
check_eq() {
  local gap=""; [ "$1" = -g ] && { gap=$2; shift 2; }
  [ "$2" = "$3" ]; result "$gap" "$1" $? "got '$2', want '$3'"
}
# check_re [-g GAP] WHAT EXTENDED-REGEX TEXT
check_re() {
  local gap=""; [ "$1" = -g ] && { gap=$2; shift 2; }
  echo "$3" | grep -qE -- "$2"; result "$gap" "$1" $? "no match for /$2/ in: $(echo "$3" | head -c 400 | tr '\n' ' ')"
}
# check_rc [-g GAP] WHAT CMD...: run CMD, pass if it exits 0 (its output is shown on failure)
check_rc() {
  local gap="" out rc; [ "$1" = -g ] && { gap=$2; shift 2; }
  local what=$1; shift
  out=$("$@" 2>&1); rc=$?
  [ $rc = 0 ] || echo "$out" | tail -8 | sed "s/^/    | /"
  result "$gap" "$what" $rc "'$*' exited $rc"
}
finish() {
  say "$CHECKS checks, $FAILS failed"
  [ $FAILS -gt 100 ] && FAILS=100
  exit $FAILS
}
# disk_for NAME: the block device (e.g. sda) of the PCI function vmstor.pci.NAME names.
# Waits up to vmstor.wait seconds (default 20) for it to appear (SCSI scanning is async).
disk_for() {
  local bdf i b n
  bdf=$(arg "vmstor.pci.$1" "")
  [ -n "$bdf" ] || { echo "no vmstor.pci.$1 on the kernel command line" >&2; return 1; }
  i=0
  while [ $i -lt $(( $(arg vmstor.wait 20) * 10 )) ]; do
    for b in /sys/block/*; do
      n=${b##*/}
      case "$(readlink -f "$b")" in */"$bdf"/*) [ -b "/dev/$n" ] && { echo "$n"; return 0; };; esac
    done
    usleep 100000; i=$((i + 1))
  done
  echo "no block device under PCI $bdf" >&2
  return 1
}
# need_disk NAME: set DISK/DEV for the test's device or exit with a failure.
need_disk() {
  DISK=$(disk_for "$1") || {
    bad "find the disk" "nothing under vmstor.pci.$1=$(arg "vmstor.pci.$1" "")"
    echo "---- dmesg (last 60 lines)"; dmesg | tail -60; echo "----"
    finish
  }
  DEV=/dev/$DISK
  say "testing $DEV ($(readlink -f /sys/block/$DISK | sed 's,/sys/devices/,,'))"
}
# pattern SEED FIRST COUNT: COUNT 4 KiB blocks of the deterministic crash pattern (see pattern.awk)
pattern() { awk -v seed="$1" -v first="$2" -v count="$3" -f /lib/pattern.awk; }
# fio_verify DEV JOBS: random 4 KiB writes at QD16 per job with crc32c verification,
# each job in its own 8 MiB region and pinned to its own CPU (so several queues are used).
fio_verify() {
  local dev=$1 jobs=${2:-2} out rc
  out=$(fio --name=verify --filename="$dev" --ioengine=libaio --direct=1 --rw=randwrite --bs=4k \
    --iodepth=16 --numjobs="$jobs" --size=8M --offset_increment=8M --verify=crc32c \
    --verify_fatal=1 --do_verify=1 --cpus_allowed=0-$(( $(nproc) - 1 )) --cpus_allowed_policy=split \
    --group_reporting --output-format=terse --terse-version=3 2>&1); rc=$?
  [ $rc = 0 ] || echo "$out" | tail -15 | sed "s/^/    | /"
  result "" "fio randwrite QD16 x$jobs jobs --verify=crc32c on $dev" $rc "fio exited $rc"
}
# vq_irqs DISK: "<queue> <interrupts>" for each request virtqueue of DISK's virtio device
# (from /proc/interrupts: MSI-X vectors are named virtioN-req.Q / virtioN-request.Q)
vq_irqs() {
  local v
  v=$(readlink -f "/sys/block/$1/device" | grep -o 'virtio[0-9]*' | tail -1)
  [ -n "$v" ] || return 0
  awk -v v="$v" '{ name = $NF; if (index(name, v "-req") == 1) { n = 0;
       for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) n += $i; else break;
       sub(".*\\.", "", name); print name, n } }' /proc/interrupts
}
# queues_used DISK BEFORE: how many request virtqueues got interrupts since BEFORE (vq_irqs output)
queues_used() {
  vq_irqs "$1" | awk -v before="$2" 'BEGIN { n = split(before, b, " ");
       for (i = 1; i < n; i += 2) was[b[i]] = b[i + 1] }
     { if ($2 > was[$1] + 0) used++ } END { print used + 0 }'
}

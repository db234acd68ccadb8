#!/bin/bash
# build-guest.sh - build the test guest for tests/guest/run.sh from Debian packages.
#
# Output (all under $GUEST_WORK, default tests/guest/work, gitignored):
#   out/vmlinux            uncompressed ELF kernel (PVH entry: QEMU boots it without a decompressor)
#   out/initramfs.cpio     uncompressed initramfs: base layer + tools layer + test layer, concatenated
#   out/kver               the kernel ABI string (e.g. 6.1.0-56-amd64)
#
# Layers (each a newc cpio, padded to 512 bytes; the kernel unpacks concatenated archives):
#   base   static busybox (applet links), kernel modules (closure of $MODULES, load order in
#          /etc/modules.load), hdparm, sg3-utils, blkdiscard (util-linux) + their ldd closure
#   tools  fio + its ldd closure (~70 MB: Debian's fio links librados/librbd/gfapi/...). Kept
#          uncompressed: copying it is cheaper under TCG than inflating it.
#   tests  /init, /lib/vmstor.sh and tests/*.sh: rebuilt on every call (milliseconds)
# Base and tools are rebuilt only when their inputs (package versions, module list, this
# script) change, so a cached rebuild takes well under a second.
#
# Needs: apt-get (Debian bookworm sources), dpkg-deb, ldd, xz, awk, sha256sum. No root except
# for apt-get (download works as root into any directory). No kmod or cpio: busybox's are used.
#
# Environment: GUEST_WORK (cache dir), GUEST_KVER (kernel ABI; default: what linux-image-amd64
# depends on), GUEST_MODULES (override the module list), GUEST_FORCE=1 (rebuild every layer).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORK=${GUEST_WORK:-$HERE/work}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
OUT=$WORK/out
mkdir -p "$OUT" "$WORK/debs"
T0=$(date +%s.%N)
say() { echo ">> build-guest: $*" >&2; }
die() { echo "!! build-guest: $*" >&2; exit 1; }

# Modules /init loads (dependencies are added and ordered automatically).
# ext4 (with crc32c) mounts the ext2 filesystems busybox mke2fs makes (remount tests).
MODULES=${GUEST_MODULES:-"ata_piix ata_generic virtio_pci virtio_blk virtio_scsi sd_mod sg crc32c_generic ext4"}

# ---------------------------------------------------------------- 0. host tools
missing=""
command -v xz >/dev/null || missing="$missing xz-utils"
command -v dpkg-deb >/dev/null || missing="$missing dpkg"
command -v ldd >/dev/null || missing="$missing libc-bin"
if [ -n "$missing" ]; then
  say "installing$missing"
  apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends $missing >/dev/null \
    || die "cannot install$missing"
fi

# ---------------------------------------------------------------- 1. packages
# A fresh machine may have no package lists yet.
if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
  say "apt-get update"; apt-get update -qq || die "apt-get update failed"
fi

# Resolving names through apt-cache costs ~0.7 s a call: cache the answers until apt's lists change.
RESOLVED=$WORK/debs/resolved.env
LISTS_KEY=$(stat -c %Y /var/lib/apt/lists/*_Packages* 2>/dev/null | sort | sha256sum | cut -c1-16)
KVER=${GUEST_KVER:-}
if [ -s "$RESOLVED" ] && [ "$(sed -n 's/^LISTS_KEY=//p' "$RESOLVED")" = "$LISTS_KEY" ]; then
  . "$RESOLVED"
  KVER=${GUEST_KVER:-$R_KVER}
else
  R_KVER=$(apt-cache depends linux-image-amd64 2>/dev/null \
    | awk '/Depends: linux-image-[0-9]/ { sub("linux-image-", "", $2); print $2; exit }')
  R_SGLIB=$(apt-cache depends sg3-utils | awk '/Depends: libsgutils2/ { print $2; exit }')
  R_FIO_VER=$(apt-cache policy fio | awk '/Candidate:/ { print $2; exit }')
  [ -n "$R_KVER" ] || die "cannot resolve the kernel ABI of linux-image-amd64"
  [ -n "$R_SGLIB" ] || die "cannot resolve sg3-utils' library package"
  [ -n "$R_FIO_VER" ] || die "cannot resolve fio's version"
  printf 'LISTS_KEY=%s\nR_KVER=%s\nR_SGLIB=%s\nR_FIO_VER=%s\n' "$LISTS_KEY" "$R_KVER" "$R_SGLIB" "$R_FIO_VER" > "$RESOLVED"
  KVER=${GUEST_KVER:-$R_KVER}
fi
SGLIB=$R_SGLIB
FIO_VER=$R_FIO_VER

BASE_PKGS="linux-image-$KVER busybox-static hdparm sg3-utils $SGLIB libc6 util-linux libblkid1"
# fio's shared-library closure, resolved once per fio version (one apt-cache call) and cached.
FIO_LIST=$WORK/debs/fio-closure-${FIO_VER//[:~]/_}.txt
if [ ! -s "$FIO_LIST" ]; then
  say "resolving fio's library closure"
  { echo fio
    apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
      --no-replaces --no-enhances fio | grep -E '^(lib|zlib)[^ ]*$' | sort -u
  } > "$FIO_LIST.tmp"
  mv "$FIO_LIST.tmp" "$FIO_LIST"
fi
TOOL_PKGS=$(tr '\n' ' ' < "$FIO_LIST")

# Download what is not cached. The file name carries the version, so a new Debian version of a
# package downloads again (and invalidates the layer stamps below).
have_deb() { compgen -G "$WORK/debs/${1}_*.deb" >/dev/null; }
need=""
for p in $BASE_PKGS $TOOL_PKGS; do have_deb "$p" || need="$need $p"; done
if [ -n "$need" ]; then
  say "apt-get download$need"
  ( cd "$WORK/debs" && apt-get download $need 2>&1 | grep -v 'Download is performed unsandboxed' ) || true
  for p in $need; do have_deb "$p" || die "download of $p failed"; done
fi
deb_of() { ls -t "$WORK"/debs/"${1}"_*.deb | head -1; }

# ---------------------------------------------------------------- 2. unpack (cached)
# One tree for everything: $X. Its stamp is the list of .deb file names.
X=$WORK/x
DEBS_KEY=$(for p in $BASE_PKGS $TOOL_PKGS; do basename "$(deb_of "$p")"; done | sort | sha256sum | cut -c1-16)
if [ "${GUEST_FORCE:-0}" = 1 ] || [ "$(cat "$X/.stamp" 2>/dev/null)" != "$DEBS_KEY" ]; then
  say "unpacking $(echo $BASE_PKGS $TOOL_PKGS | wc -w) packages"
  rm -rf "$X"; mkdir -p "$X"
  for p in $BASE_PKGS $TOOL_PKGS; do dpkg-deb -x "$(deb_of "$p")" "$X"; done
  echo "$DEBS_KEY" > "$X/.stamp"
fi
BB=$X/bin/busybox
MODDIR=$X/lib/modules/$KVER
[ -d "$MODDIR" ] || die "no $MODDIR in the kernel package"
# The .deb ships no modules.dep (its postinst runs depmod); busybox's depmod makes one.
[ -s "$MODDIR/modules.dep" ] || { say "depmod $KVER"; "$BB" depmod -b "$X" "$KVER"; }

# ---------------------------------------------------------------- 3. vmlinux (cached)
# The bzImage payload is one XZ stream; the ELF inside has a PVH note QEMU boots directly.
if [ ! -s "$WORK/vmlinux-$KVER" ]; then
  say "extracting the ELF vmlinux"
  off=$(LC_ALL=C grep -aboP '\xfd7zXZ\x00' "$X/boot/vmlinuz-$KVER" | head -1 | cut -d: -f1)
  [ -n "$off" ] || die "no XZ stream in vmlinuz-$KVER"
  # tail gets SIGPIPE once xz has read its single stream: not an error here.
  ( set +o pipefail; tail -c +$((off + 1)) "$X/boot/vmlinuz-$KVER" | xz -dc --single-stream ) \
    > "$WORK/vmlinux-$KVER.tmp" || true
  head -c 4 "$WORK/vmlinux-$KVER.tmp" | grep -q ELF || die "vmlinux extraction failed"
  mv "$WORK/vmlinux-$KVER.tmp" "$WORK/vmlinux-$KVER"
fi
ln -f "$WORK/vmlinux-$KVER" "$OUT/vmlinux" 2>/dev/null || cp "$WORK/vmlinux-$KVER" "$OUT/vmlinux"
echo "$KVER" > "$OUT/kver"
cp "$X/boot/config-$KVER" "$OUT/config"

# ---------------------------------------------------------------- helpers
# pack DIR OUTFILE: newc cpio of DIR, padded to 512 bytes so the next archive starts aligned.
pack() {
  ( cd "$1" && find . -mindepth 1 | LC_ALL=C sort | "$BB" cpio -o -H newc 2>/dev/null ) > "$2.tmp"
  truncate -s %512 "$2.tmp"
  mv "$2.tmp" "$2"
}
LIBPATH=$X/usr/lib/x86_64-linux-gnu:$X/lib/x86_64-linux-gnu:$X/usr/lib/x86_64-linux-gnu/ceph
# add_elf ROOT FILE...: copy each file (a path inside $X) and its ldd closure into ROOT,
# at the same path. Libraries come from the unpacked .debs, never from the host.
add_elf() {
  local root=$1 f lib; shift
  for f in "$@"; do
    mkdir -p "$root/$(dirname "${f#"$X"}")"
    cp -L "$f" "$root/${f#"$X"}"
    while read -r lib; do
      case $lib in
        "$X"/*) ;;
        *) die "$(basename "$f") needs $lib, which is not in the unpacked packages";;
      esac
      [ -e "$root/${lib#"$X"}" ] && continue
      mkdir -p "$root/$(dirname "${lib#"$X"}")"
      cp -L "$lib" "$root/${lib#"$X"}"
    done < <(LD_LIBRARY_PATH=$LIBPATH ldd "$f" | awk '
      /=> not found/ { print "MISSING:" $1; next }
      /=> \// { print $3 }')
  done
}

# ---------------------------------------------------------------- 4. base layer (cached)
SELF_KEY=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)
BASE_KEY=$(echo "$DEBS_KEY $SELF_KEY $MODULES" | sha256sum | cut -c1-16)
if [ "${GUEST_FORCE:-0}" = 1 ] || [ "$(cat "$OUT/base.key" 2>/dev/null)" != "$BASE_KEY" ] || [ ! -s "$OUT/base.cpio" ]; then
  say "building the base layer"
  # Module closure, dependencies first (modules.dep lists full paths relative to $MODDIR).
  declare -A SEEN=()
  ORDER=()
  resolve() {
    local n=${1//-/_} line path d
    [ -n "${SEEN[$n]:-}" ] && return 0
    SEEN[$n]=1
    line=$(awk -v n="$n" -F: '{ b = $1; sub(".*/", "", b); sub("\\.ko.*$", "", b); gsub("-", "_", b);
                                if (b == n) { print; exit } }' "$MODDIR/modules.dep")
    if [ -z "$line" ]; then
      grep -qE "/(${1}|${n})\.ko$" "$MODDIR/modules.builtin" && return 0
      die "module $1 is neither a .ko nor built in"
    fi
    path=${line%%:*}
    for d in ${line#*:}; do d=${d##*/}; resolve "${d%%.ko*}"; done
    ORDER+=("$path")
  }
  for m in $MODULES; do resolve "$m"; done

  R=$WORK/root-base
  rm -rf "$R"
  mkdir -p "$R"/{bin,sbin,etc,proc,sys,dev,tmp,run,mnt,lib64,usr/bin,usr/sbin,lib/modules/"$KVER"}
  cp "$BB" "$R/bin/busybox"
  for a in $("$BB" --list-full); do [ -e "$R/$a" ] || ln -s /bin/busybox "$R/$a"; done
  : > "$R/etc/modules.load"
  for p in "${ORDER[@]}"; do
    mkdir -p "$R/lib/modules/$KVER/$(dirname "$p")"
    cp "$MODDIR/$p" "$R/lib/modules/$KVER/$p"
    echo "$p" >> "$R/etc/modules.load"
    grep "^$p:" "$MODDIR/modules.dep" >> "$R/lib/modules/$KVER/modules.dep"
  done
  cp "$MODDIR/modules.builtin" "$R/lib/modules/$KVER/"
  # Dynamic tools replace busybox applets of the same name (util-linux blkdiscard knows -z).
  # busybox sh runs its own applets before PATH lookups: tests call such tools by full path.
  rm -f "$R/sbin/blkdiscard" "$R/usr/bin/blkdiscard"
  add_elf "$R" "$X/sbin/hdparm" "$X/sbin/blkdiscard" "$X"/usr/bin/sg_* "$X/usr/bin/sginfo"
  # Debian's ld.so searches /lib/x86_64-linux-gnu and /usr/lib/x86_64-linux-gnu by default.
  cp -L "$X/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" "$R/lib64/ld-linux-x86-64.so.2"
  pack "$R" "$OUT/base.cpio"
  echo "$BASE_KEY" > "$OUT/base.key"
  say "modules (load order): $(for p in "${ORDER[@]}"; do basename "$p" .ko; done | tr '\n' ' ')"
fi

# ---------------------------------------------------------------- 5. tools layer (cached)
TOOLS_KEY=$(echo "$DEBS_KEY $SELF_KEY" | sha256sum | cut -c1-16)
if [ "${GUEST_FORCE:-0}" = 1 ] || [ "$(cat "$OUT/tools.key" 2>/dev/null)" != "$TOOLS_KEY" ] || [ ! -s "$OUT/tools.cpio" ]; then
  say "building the tools layer (fio)"
  R=$WORK/root-tools
  rm -rf "$R"; mkdir -p "$R"
  add_elf "$R" "$X/usr/bin/fio"
  # libc/ld.so are in the base layer already; do not ship them twice.
  rm -f "$R/lib/x86_64-linux-gnu/libc.so.6" "$R/lib64/ld-linux-x86-64.so.2"
  pack "$R" "$OUT/tools.cpio"
  echo "$TOOLS_KEY" > "$OUT/tools.key"
fi

# ---------------------------------------------------------------- 6. test layer (always)
R=$WORK/root-tests
rm -rf "$R"; mkdir -p "$R/tests" "$R/lib"
install -m 0755 "$HERE/guest/init" "$R/init"
install -m 0644 "$HERE/guest/vmstor.sh" "$R/lib/vmstor.sh"
install -m 0644 "$HERE/guest/pattern.awk" "$R/lib/pattern.awk"
for t in "$HERE"/tests/*.sh; do install -m 0755 "$t" "$R/tests/$(basename "$t")"; done
pack "$R" "$OUT/tests.cpio"

cat "$OUT/base.cpio" "$OUT/tools.cpio" "$OUT/tests.cpio" > "$OUT/initramfs.cpio.tmp"
mv "$OUT/initramfs.cpio.tmp" "$OUT/initramfs.cpio"
T1=$(date +%s.%N)
say "kernel $KVER; $OUT/initramfs.cpio $(( $(stat -c %s "$OUT/initramfs.cpio") / 1024 )) KiB" \
    "(base $(( $(stat -c %s "$OUT/base.cpio") / 1024 )) KiB, tools $(( $(stat -c %s "$OUT/tools.cpio") / 1024 )) KiB);" \
    "$(awk -v a="$T0" -v b="$T1" 'BEGIN { printf "%.1f", b - a }') s"

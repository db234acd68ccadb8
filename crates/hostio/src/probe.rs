//! Host capability probe for an image file or block device.
//!
//! Every fact comes from a named source (statx, an ioctl, a sysfs attribute,
//! a harmless trial syscall); a fact that cannot be established is
//! [`Fact::Unknown`] with the reason. Nothing here writes to the image's
//! data: the zeroing/discard trials act on the range just past the end of a
//! regular file with `FALLOC_FL_KEEP_SIZE`, which neither changes the size
//! nor any byte inside it.

use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use vmm_sys_util::ioctl::ioctl_with_mut_ref;
use vmm_sys_util::{ioctl_io_nr, ioctl_ior_nr};

use crate::caps::{BackingKind, Fact, HostCaps};
use crate::policy::{CacheMode, StableWrites};

mod nr {
    #![allow(missing_docs)]
    use super::*;
    ioctl_io_nr!(BLKSSZGET, 0x12, 104);
    ioctl_io_nr!(BLKPBSZGET, 0x12, 123);
    ioctl_ior_nr!(BLKGETSIZE64, 0x12, 114, u64);
    ioctl_ior_nr!(FS_IOC_GETFLAGS, b'f' as u32, 1, libc::c_long);
}
use nr::{BLKGETSIZE64, BLKPBSZGET, BLKSSZGET, FS_IOC_GETFLAGS};

const FS_NOCOW_FL: libc::c_long = 0x0080_0000;
const BTRFS_SUPER_MAGIC: i64 = 0x9123_683E;
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// The probe's findings plus a recommendation for operators.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// The facts.
    pub caps: HostCaps,
    /// Where the O_DIRECT alignment came from.
    pub dio_align_source: String,
    /// Whether the image can be opened with O_DIRECT at all.
    pub direct_ok: Fact<bool>,
    /// The devices examined for `stable_writes`, with their values.
    pub devices: Vec<(String, Fact<bool>)>,
    /// Recommended cache mode.
    pub recommended_cache: CacheMode,
    /// Recommended stable-writes setting.
    pub recommended_stable: StableWrites,
    /// Why.
    pub reason: String,
}

/// Probes the image at `path` (opened read-only; nothing is written).
pub fn probe_path(path: &Path) -> io::Result<ProbeReport> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)?;
    probe_file(&file, path, false)
}

fn read_sys(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

/// `/sys/dev/block/MAJ:MIN`, resolved to the whole disk when it is a
/// partition (partitions have no `queue/`).
fn sys_dev(dev: u64) -> Option<PathBuf> {
    let (maj, min) = (libc::major(dev), libc::minor(dev));
    if maj == 0 {
        return None;
    }
    let p = fs::canonicalize(format!("/sys/dev/block/{maj}:{min}")).ok()?;
    if p.join("queue").is_dir() {
        Some(p)
    } else {
        let parent = p.parent()?.to_path_buf();
        parent.join("queue").is_dir().then_some(parent)
    }
}

fn sys_bool(dev: &Path, attr: &str) -> Fact<bool> {
    match read_sys(&dev.join(attr)) {
        Some(v) => match v.as_str() {
            "1" | "write back" => Fact::Known(true, "sysfs"),
            "0" | "write through" => Fact::Known(false, "sysfs"),
            other => Fact::Unknown(format!("{attr} reads {other:?}")),
        },
        None => Fact::Unknown(format!("cannot read {}", dev.join(attr).display())),
    }
}

/// Walks the device stack below `dev` (slaves of md/dm, backing files of
/// loop devices) collecting `queue/stable_writes`.
fn stable_walk(dev: u64, depth: u32, out: &mut Vec<(String, Fact<bool>)>) {
    if depth > 8 {
        return;
    }
    let Some(sys) = sys_dev(dev) else {
        return;
    };
    let name = sys
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if out.iter().any(|(n, _)| *n == name) {
        return;
    }
    out.push((name, sys_bool(&sys, "queue/stable_writes")));
    if let Ok(rd) = fs::read_dir(sys.join("slaves")) {
        for e in rd.flatten() {
            if let Some(d) = read_sys(&e.path().join("dev")) {
                if let Some(dev) = parse_majmin(&d) {
                    stable_walk(dev, depth + 1, out);
                }
            }
        }
    }
    if let Some(bf) = read_sys(&sys.join("loop/backing_file")) {
        if let Ok(m) = fs::metadata(&bf) {
            stable_walk(m.dev(), depth + 1, out);
        }
    }
}

fn parse_majmin(s: &str) -> Option<u64> {
    let (a, b) = s.split_once(':')?;
    Some(libc::makedev(a.parse().ok()?, b.parse().ok()?))
}

fn statfs_type(file: &File) -> Option<i64> {
    let mut s = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: fstatfs writes a statfs into the provided, correctly sized buffer.
    let r = unsafe { libc::fstatfs(file.as_raw_fd(), s.as_mut_ptr()) };
    if r != 0 {
        return None;
    }
    // SAFETY: fstatfs succeeded, so the struct is initialised.
    let s = unsafe { s.assume_init() };
    #[allow(clippy::unnecessary_cast)] // f_type is not i64 on every libc target
    Some(s.f_type as i64)
}

struct DioAlign {
    mem: u32,
    offset: u32,
    source: String,
}

fn statx_dio(file: &File) -> Option<(u32, u32)> {
    let mut sx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    let empty = CString::new("").ok()?;
    // SAFETY: statx with AT_EMPTY_PATH on our fd writes into the buffer.
    let r = unsafe {
        libc::statx(
            file.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            sx.as_mut_ptr(),
        )
    };
    if r != 0 {
        return None;
    }
    // SAFETY: statx succeeded.
    let sx = unsafe { sx.assume_init() };
    if sx.stx_mask & libc::STATX_DIOALIGN == 0
        || sx.stx_dio_mem_align == 0
        || sx.stx_dio_offset_align == 0
    {
        return None;
    }
    Some((sx.stx_dio_mem_align, sx.stx_dio_offset_align))
}

/// Trial `O_DIRECT` reads at offset 0 for increasing lengths; only EINVAL
/// counts as misaligned.
fn trial_dio(path: &Path, size: u64) -> Option<u32> {
    if size < 4096 {
        return None;
    }
    let f = File::options()
        .read(true)
        .custom_flags(libc::O_DIRECT | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    let mut buf = crate::buf::AlignedBuf::new(4096);
    for len in [512usize, 1024, 2048, 4096] {
        // SAFETY: buf is a valid, writable 4096-byte aligned buffer.
        let r = unsafe {
            libc::pread(
                f.as_raw_fd(),
                buf.as_mut_slice().as_mut_ptr().cast(),
                len,
                0,
            )
        };
        if r >= 0 {
            return Some(len as u32);
        }
        if io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            return None;
        }
    }
    None
}

fn dio_align(
    file: &File,
    path: &Path,
    fstype: Option<i64>,
    blk: bool,
    lbs: u32,
    size: u64,
) -> DioAlign {
    if let Some((mem, offset)) = statx_dio(file) {
        return DioAlign {
            mem,
            offset,
            source: "statx STATX_DIOALIGN".into(),
        };
    }
    if fstype == Some(BTRFS_SUPER_MAGIC) {
        // btrfs does not report DIOALIGN; below its sector size it silently
        // falls back to buffered I/O (host-facts §2).
        return DioAlign {
            mem: 4096,
            offset: 4096,
            source: "btrfs sector size (no STATX_DIOALIGN)".into(),
        };
    }
    if blk {
        return DioAlign {
            mem: lbs.max(512),
            offset: lbs.max(512),
            source: "BLKSSZGET".into(),
        };
    }
    if let Some(a) = trial_dio(path, size) {
        return DioAlign {
            mem: a,
            offset: a,
            source: "trial O_DIRECT reads".into(),
        };
    }
    DioAlign {
        mem: 4096,
        offset: 4096,
        source: "unknown: no STATX_DIOALIGN and trial reads failed; assuming 4096".into(),
    }
}

/// Whether `fallocate(mode)` works on this file, tried past its end with
/// KEEP_SIZE (no byte of the image changes) and undone.
fn trial_fallocate(file: &File, size: u64, mode: i32) -> bool {
    let (o, l) = (size.next_multiple_of(4096) as i64, 4096i64);
    // SAFETY: fallocate on our fd with no memory arguments.
    let r = unsafe { libc::fallocate(file.as_raw_fd(), mode | libc::FALLOC_FL_KEEP_SIZE, o, l) };
    if r == 0 && mode & libc::FALLOC_FL_PUNCH_HOLE == 0 {
        // Give back whatever ZERO_RANGE preallocated past EOF.
        // SAFETY: as above.
        unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                o,
                l,
            )
        };
    }
    r == 0
}

/// Whether this kernel accepts `pwritev2` with `flags`.
///
/// Tried with a one-byte write to a private memfd, so the image is never
/// written and a read-only open can answer too. A zero-length write to the
/// image would prove nothing: the kernel returns 0 for an empty transfer
/// before it looks at the flags. `RWF_DSYNC` is handled by the VFS for every
/// file (it sets IOCB_DSYNC and syncs after the write), so the kernel's
/// answer is the file's. Any failure answers "no": the planner then falls
/// back to write + `fdatasync`, which is durable too.
pub(crate) fn pwritev2_accepts(flags: libc::c_int) -> bool {
    // SAFETY: memfd_create with a NUL-terminated name; the fd is ours.
    let fd = unsafe { libc::memfd_create(c"vmstor-probe".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return false;
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let byte = [0u8; 1];
    let iov = libc::iovec {
        iov_base: byte.as_ptr() as *mut libc::c_void,
        iov_len: 1,
    };
    // SAFETY: one iovec over `byte`, which outlives the call; the kernel
    // only reads it.
    let r = unsafe { libc::pwritev2(fd.as_raw_fd(), &iov, 1, 0, flags) };
    r == 1
}

fn rwf_dsync_ok() -> bool {
    pwritev2_accepts(libc::RWF_DSYNC)
}

/// Probes an already-open image. The past-EOF fallocate trials run only when
/// the file is open for writing.
pub(crate) fn probe_file(file: &File, path: &Path, _direct: bool) -> io::Result<ProbeReport> {
    let md = file.metadata()?;
    let ft = md.file_type();
    let blk = ft.is_block_device();
    if !blk && !ft.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file or block device",
        ));
    }
    let writable = {
        // SAFETY: F_GETFL on our fd.
        let fl = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
        fl >= 0 && (fl & libc::O_ACCMODE) != libc::O_RDONLY
    };
    let fstype = statfs_type(file);
    let (size, lbs, pbs) = if blk {
        let mut size = 0u64;
        // SAFETY: BLKGETSIZE64 writes a u64.
        if unsafe { ioctl_with_mut_ref(file, BLKGETSIZE64(), &mut size) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut l: libc::c_int = 512;
        let mut p: libc::c_uint = 0;
        // SAFETY: BLKSSZGET writes an int, BLKPBSZGET an unsigned int.
        unsafe {
            ioctl_with_mut_ref(file, BLKSSZGET(), &mut l);
            ioctl_with_mut_ref(file, BLKPBSZGET(), &mut p);
        }
        (size, (l as u32).max(512), p.max(l as u32).max(512))
    } else {
        (md.len(), 512, (md.blksize() as u32).clamp(512, 65536))
    };
    let dio = dio_align(file, path, fstype, blk, lbs, size);
    let direct_ok = match File::options()
        .read(true)
        .custom_flags(libc::O_DIRECT | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(_) => Fact::Known(true, "open(O_DIRECT)"),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Fact::Known(false, "open(O_DIRECT)"),
        Err(e) => Fact::Unknown(format!("open(O_DIRECT): {e}")),
    };
    let dev = if blk { md.rdev() } else { md.dev() };
    let sys = sys_dev(dev);
    let (host_write_cache, host_fua, rotational) = match &sys {
        Some(s) => (
            sys_bool(s, "queue/write_cache"),
            sys_bool(s, "queue/fua"),
            sys_bool(s, "queue/rotational"),
        ),
        None => {
            let why = format!(
                "device {}:{} has no block device in sysfs",
                libc::major(dev),
                libc::minor(dev)
            );
            (
                Fact::Unknown(why.clone()),
                Fact::Unknown(why.clone()),
                Fact::Unknown(why),
            )
        }
    };
    // I/O size hints of the device under the image (for a file: of its
    // file system's device); 0 when unknown.
    let io_hint = |attr: &str| {
        sys.as_ref()
            .and_then(|s| read_sys(&s.join(attr)))
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    };
    let (io_min, io_opt) = (
        io_hint("queue/minimum_io_size"),
        io_hint("queue/optimal_io_size"),
    );
    let (discard, write_zeroes) = if blk {
        let d = sys
            .as_ref()
            .and_then(|s| read_sys(&s.join("queue/discard_max_bytes")))
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|v| v > 0);
        // BLKZEROOUT always works: the kernel writes zeroes if it must.
        (d, true)
    } else if writable {
        (
            trial_fallocate(file, size, libc::FALLOC_FL_PUNCH_HOLE),
            trial_fallocate(file, size, libc::FALLOC_FL_ZERO_RANGE),
        )
    } else {
        (false, false)
    };

    // Stable pages.
    let mut devices = Vec::new();
    stable_walk(dev, 0, &mut devices);
    let mut reasons = Vec::new();
    let mut unknown = Vec::new();
    for (name, f) in &devices {
        match f {
            Fact::Known(true, _) => reasons.push(format!("{name}: queue/stable_writes=1")),
            Fact::Known(false, _) => {}
            Fact::Unknown(why) => unknown.push(format!("{name}: {why}")),
        }
    }
    if fstype == Some(BTRFS_SUPER_MAGIC) {
        let mut flags: libc::c_long = 0;
        // SAFETY: FS_IOC_GETFLAGS writes a long.
        let r = unsafe { ioctl_with_mut_ref(file, FS_IOC_GETFLAGS(), &mut flags) };
        if r < 0 {
            unknown.push("btrfs: cannot read inode flags".into());
        } else if flags & FS_NOCOW_FL == 0 {
            reasons.push(
                "btrfs inode with data checksums (no NOCOW attribute): a buffer changed during \
                 O_DIRECT fails its checksum (kernels < 6.14) or forces buffered fallback"
                    .into(),
            );
        }
    }
    let (stable_pages, stable_pages_why) = if !reasons.is_empty() {
        (Fact::Known(true, "probe"), reasons.join("; "))
    } else if !unknown.is_empty() {
        (Fact::Unknown(unknown.join("; ")), unknown.join("; "))
    } else if devices.is_empty() {
        match fstype {
            Some(TMPFS_MAGIC) => (
                Fact::Known(false, "tmpfs"),
                "tmpfs: memory, no block device".to_string(),
            ),
            Some(BTRFS_SUPER_MAGIC) => (
                Fact::Known(false, "btrfs NOCOW"),
                "btrfs NOCOW inode: no data checksums".to_string(),
            ),
            _ => {
                let why = "no block device below this file system to examine".to_string();
                (Fact::Unknown(why.clone()), why)
            }
        }
    } else {
        (
            Fact::Known(false, "sysfs"),
            format!(
                "queue/stable_writes=0 on {}",
                devices
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    };

    let caps = HostCaps {
        kind: if blk {
            BackingKind::BlockDevice
        } else {
            BackingKind::File
        },
        size,
        logical_block_size: lbs,
        physical_block_size: pbs,
        dio_mem_align: dio.mem.max(1).next_power_of_two(),
        dio_offset_align: dio.offset.max(1).next_power_of_two(),
        rwf_dsync: rwf_dsync_ok(),
        discard,
        write_zeroes,
        host_write_cache,
        host_fua,
        stable_pages,
        stable_pages_why,
        rotational,
        io_min,
        io_opt,
    };
    let (recommended_cache, recommended_stable, reason) = recommend(&caps, &direct_ok);
    Ok(ProbeReport {
        caps,
        dio_align_source: dio.source,
        direct_ok,
        devices,
        recommended_cache,
        recommended_stable,
        reason,
    })
}

fn recommend(caps: &HostCaps, direct_ok: &Fact<bool>) -> (CacheMode, StableWrites, String) {
    if direct_ok.get() != Some(true) {
        return (
            CacheMode::Writeback,
            StableWrites::Auto,
            "O_DIRECT is not available here; buffered I/O with guest flushes mapped to fdatasync"
                .into(),
        );
    }
    match caps.stable_pages {
        Fact::Known(false, _) => (
            CacheMode::None,
            StableWrites::Trust,
            format!(
                "O_DIRECT is safe without copying: {}; guest flushes still map to fdatasync",
                caps.stable_pages_why
            ),
        ),
        Fact::Known(true, _) => (
            CacheMode::None,
            StableWrites::Bounce,
            format!(
                "storage below needs stable pages ({}): O_DIRECT writes must be copied out of \
                 guest memory first",
                caps.stable_pages_why
            ),
        ),
        Fact::Unknown(ref why) => (
            CacheMode::None,
            StableWrites::Bounce,
            format!(
                "cannot tell whether stable pages are needed ({why}); copying is the safe choice"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::pwritev2_accepts;

    #[test]
    fn rwf_dsync_probe_can_say_no() {
        assert!(
            pwritev2_accepts(libc::RWF_DSYNC),
            "kernels >= 4.7 accept it"
        );
        assert!(pwritev2_accepts(0));
        // A flag no kernel defines: the same probe must answer no.
        assert!(!pwritev2_accepts(0x4000_0000));
    }
}

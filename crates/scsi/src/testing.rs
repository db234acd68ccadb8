//! Test support (feature `test-utils`): an in-memory [`HostFile`] with
//! fault injection and a write gate, and a constructor for disks over it.
//! Used by this crate's tests, the virtio-scsi tests and the fuzz targets.

use std::io;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use vmstor_hostio::{Disk, DiskOptions, ExecutorKind, HostCaps, HostFile, IoVec, Policy};

/// An image in memory. Each `*_errno` makes that kind of syscall fail with
/// the errno (0 = succeed) until cleared; a closed gate blocks writes until
/// opened.
#[derive(Debug)]
pub struct MemFile {
    data: Mutex<Vec<u8>>,
    /// errno for `preadv`.
    pub read_errno: AtomicI32,
    /// errno for `pwritev`.
    pub write_errno: AtomicI32,
    /// errno for `fdatasync`.
    pub sync_errno: AtomicI32,
    /// errno for discard / zeroing.
    pub discard_errno: AtomicI32,
    gate: Mutex<bool>,
    gate_cv: Condvar,
    violations: AtomicU64,
}

impl MemFile {
    /// A zeroed image of `size` bytes.
    pub fn new(size: usize) -> MemFile {
        MemFile {
            data: Mutex::new(vec![0; size]),
            read_errno: AtomicI32::new(0),
            write_errno: AtomicI32::new(0),
            sync_errno: AtomicI32::new(0),
            discard_errno: AtomicI32::new(0),
            gate: Mutex::new(true),
            gate_cv: Condvar::new(),
            violations: AtomicU64::new(0),
        }
    }

    /// Host accesses that reached past the end of the image (the engine
    /// must never issue one; fuzz entries assert this stays 0). Such an
    /// access is clipped to the image and counted here.
    pub fn violations(&self) -> u64 {
        self.violations.load(Ordering::Relaxed)
    }

    /// Counts an access to `[offset, offset + len)` that leaves the image.
    fn check_range(&self, offset: u64, len: u64, size: usize) {
        if offset.checked_add(len).is_none_or(|end| end > size as u64) {
            self.violations.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A copy of `len` bytes at `off`.
    pub fn read_at(&self, off: usize, len: usize) -> Vec<u8> {
        self.data.lock().unwrap()[off..off + len].to_vec()
    }

    /// Writes `b` at `off` directly (test setup).
    pub fn write_at(&self, off: usize, b: &[u8]) {
        self.data.lock().unwrap()[off..off + b.len()].copy_from_slice(b);
    }

    /// Opens (true) or closes (false) the write gate.
    pub fn set_gate(&self, open: bool) {
        *self.gate.lock().unwrap() = open;
        self.gate_cv.notify_all();
    }

    fn err(e: &AtomicI32) -> io::Result<()> {
        match e.load(Ordering::SeqCst) {
            0 => Ok(()),
            n => Err(io::Error::from_raw_os_error(n)),
        }
    }

    fn fill(&self, offset: u64, len: u64) -> io::Result<()> {
        Self::err(&self.discard_errno)?;
        let mut d = self.data.lock().unwrap();
        self.check_range(offset, len, d.len());
        let (o, l) = (offset as usize, len as usize);
        d.get_mut(o..o + l)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?
            .fill(0);
        Ok(())
    }
}

impl HostFile for MemFile {
    fn preadv(&self, iov: &[IoVec], offset: u64) -> io::Result<usize> {
        Self::err(&self.read_errno)?;
        let d = self.data.lock().unwrap();
        self.check_range(offset, iov.iter().map(|v| v.len() as u64).sum(), d.len());
        let mut at = offset as usize;
        let mut n = 0;
        for v in iov {
            let end = (at + v.len()).min(d.len());
            if at >= end {
                break;
            }
            v.copy_from(0, &d[at..end]);
            n += end - at;
            at = end;
        }
        Ok(n)
    }

    fn pwritev(&self, iov: &[IoVec], offset: u64, _dsync: bool) -> io::Result<usize> {
        {
            let mut g = self.gate.lock().unwrap();
            while !*g {
                g = self.gate_cv.wait(g).unwrap();
            }
        }
        Self::err(&self.write_errno)?;
        let mut d = self.data.lock().unwrap();
        self.check_range(offset, iov.iter().map(|v| v.len() as u64).sum(), d.len());
        let mut at = offset as usize;
        let mut n = 0;
        for v in iov {
            let end = (at + v.len()).min(d.len());
            if at >= end {
                break;
            }
            v.copy_to(0, &mut d[at..end]);
            n += end - at;
            at = end;
        }
        Ok(n)
    }

    fn fdatasync(&self) -> io::Result<()> {
        Self::err(&self.sync_errno)
    }

    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        self.fill(offset, len)
    }

    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        self.fill(offset, len)
    }

    fn blk_discard(&self, _: u64, _: u64) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::ENOTTY))
    }

    fn blk_zeroout(&self, _: u64, _: u64) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::ENOTTY))
    }
}

/// A traced disk of `size` bytes (512-byte blocks, simulated caps) over a
/// fresh [`MemFile`].
pub fn mem_disk(size: usize, policy: Policy, executor: ExecutorKind) -> (Arc<Disk>, Arc<MemFile>) {
    let f = Arc::new(MemFile::new(size));
    let disk = Disk::from_host_file(
        f.clone(),
        HostCaps::simulated(size as u64),
        policy,
        DiskOptions {
            executor,
            trace: true,
            ..Default::default()
        },
    )
    .expect("in-memory disk");
    (Arc::new(disk), f)
}

/// A small deterministic PRNG (xorshift64*) for randomized tests.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0.max(1);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// `n` random bytes, biased toward small values and known opcodes so
    /// inputs reach deep into the decoders.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        const OPS: &[u8] = &[
            0x00, 0x03, 0x08, 0x0a, 0x12, 0x15, 0x1a, 0x1b, 0x1e, 0x25, 0x28, 0x2a, 0x2e, 0x2f,
            0x35, 0x41, 0x42, 0x55, 0x5a, 0x88, 0x8a, 0x8e, 0x8f, 0x91, 0x93, 0x9e, 0xa0, 0xa3,
            0xa8, 0xaa,
        ];
        (0..n)
            .map(|_| {
                let r = self.next_u64();
                match r % 4 {
                    0 => 0,
                    1 => OPS[(r >> 8) as usize % OPS.len()],
                    2 => (r >> 8) as u8 & 0x0f,
                    _ => (r >> 8) as u8,
                }
            })
            .collect()
    }
}

fn checked(lu: &crate::ScsiDisk, cdb: &[u8], buf_len: usize, d: &crate::Done) {
    use crate::{Outcome, Status};
    let t = lu.transfer(cdb);
    match &d.outcome {
        Outcome::Overrun => assert!((buf_len as u64) < t.len(), "overrun with room"),
        Outcome::Complete(r) => {
            assert!(
                r.transferred <= buf_len as u64,
                "moved more than the buffer"
            );
            assert_eq!(r.status == Status::CheckCondition, !r.sense.is_empty());
            if r.status == Status::CheckCondition {
                assert!(crate::Sense::parse(&r.sense).is_some());
            }
        }
        o => panic!("unexpected outcome {o:?}"),
    }
}

/// Fuzz entry: a sequence of arbitrary CDBs with arbitrary data-out, on a
/// small disk; checks the logical unit's invariants after each command.
/// Input: byte 0 picks the policy; then records of
/// `[cdb_len % 33][cdb...][buf_len lo][buf_len hi % 32][data-out...]`.
pub fn fuzz_cdb(data: &[u8]) {
    use vmstor_hostio::{AlignedBuf, CacheMode, DataBuf, DiscardMode, ErrorAction};
    let Some((&p, mut rest)) = data.split_first() else {
        return;
    };
    let mut policy = Policy::from_mode(if p & 1 != 0 {
        CacheMode::Writethrough
    } else {
        CacheMode::Writeback
    });
    policy.read_only = p & 2 != 0;
    policy.discard = if p & 4 != 0 {
        DiscardMode::Unmap
    } else {
        DiscardMode::Ignore
    };
    policy.errors.write = ErrorAction::Report;
    let (disk, file) = mem_disk(64 << 10, policy, ExecutorKind::Inline);
    if p & 8 != 0 {
        file.write_errno.store(libc::EIO, Ordering::SeqCst);
    }
    let lu = crate::ScsiDisk::new(
        disk,
        crate::ScsiDiskConfig {
            max_transfer_bytes: 16 << 10,
            max_write_same_bytes: 32 << 10,
            write_same_chunk: 4096,
            ..Default::default()
        },
    );
    let mut n = 0;
    while let Some((&cl, r)) = rest.split_first() {
        n += 1;
        if n > 64 {
            break;
        }
        let cl = usize::from(cl % 33).min(r.len());
        let (cdb, r) = r.split_at(cl);
        let (lo, hi, r) = match r {
            [lo, hi, r @ ..] => (*lo, *hi, r),
            _ => (0, 0, r),
        };
        let len = usize::from(u16::from_le_bytes([lo, hi % 32]));
        let take = len.min(r.len());
        let mut b = AlignedBuf::new(len);
        b.as_mut_slice()[..take].copy_from_slice(&r[..take]);
        rest = &r[take..];
        let nexus = crate::NexusId(u64::from(cdb.first().copied().unwrap_or(0) & 1));
        if let Some(d) = lu.execute(nexus, cdb, DataBuf::Owned(b)) {
            checked(&lu, cdb, len, &d);
        }
        assert_eq!(file.violations(), 0, "host access outside the image");
    }
}

/// Fuzz entry: an arbitrary MODE SELECT parameter list (byte 0 picks the
/// 6- or 10-byte CDB). A list the unit accepts must leave MODE SENSE and
/// the disk's write cache agreeing.
pub fn fuzz_mode_select(data: &[u8]) {
    use vmstor_hostio::{AlignedBuf, DataBuf};
    let Some((&k, list)) = data.split_first() else {
        return;
    };
    let (disk, file) = mem_disk(64 << 10, Policy::default(), ExecutorKind::Inline);
    let lu = crate::ScsiDisk::new(disk.clone(), crate::ScsiDiskConfig::default());
    let n0 = crate::NexusId(0);
    let _ = lu.execute(n0, &[0; 6], DataBuf::None);
    let ten = k & 1 != 0;
    let list = &list[..list.len().min(if ten { 4096 } else { 255 })];
    let cdb: Vec<u8> = if ten {
        let l = (list.len() as u16).to_be_bytes();
        vec![0x55, 0x10, 0, 0, 0, 0, 0, l[0], l[1], 0]
    } else {
        vec![0x15, 0x10, 0, 0, list.len() as u8, 0]
    };
    let d = lu
        .execute(n0, &cdb, DataBuf::Owned(AlignedBuf::from_slice(list)))
        .expect("not held");
    checked(&lu, &cdb, list.len(), &d);
    let ms = lu
        .execute(
            n0,
            &[0x1a, 0x08, 0x08, 0, 0xff, 0],
            DataBuf::Owned(AlignedBuf::new(255)),
        )
        .expect("not held");
    if let crate::Outcome::Complete(r) = &ms.outcome {
        if r.status == crate::Status::Good {
            if let DataBuf::Owned(b) = &ms.buf {
                assert_eq!(b.as_slice()[6] & 4 != 0, disk.write_cache());
            }
        }
    }
    assert_eq!(file.violations(), 0, "host access outside the image");
}

//! Fuzz entry (feature `test-utils`): a byte stream played as QEMU against a
//! [`Remote`] with the [`TestDevice`].
//!
//! The input is a sequence of messages exactly as on the wire (16-byte header,
//! payload). Descriptors cannot ride in a byte string, so the first padding
//! byte of each header says how many to attach (`pad[0] % 10`): the first is
//! a 64 KiB memfd (so `SYNC_SYSMEM` can really map), the others eventfds. The
//! stream stops at the first message the protocol rejects, as the real remote
//! drops the connection there.
//!
//! Checked invariants (a panic is a bug): no panic anywhere; a `RET` is
//! produced exactly for the commands that need one; a read's value fits its
//! access size; the device never maps more guest RAM than the memfd holds.

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};

use vmm_sys_util::eventfd::EventFd;
use zerocopy::FromBytes;

use crate::irq::IrqLine;
use crate::server::Remote;
use crate::testdev::TestDevice;
use crate::wire::{self, size_mask, Message, MsgHeader, HEADER_SIZE};

const MEMFD_SIZE: u64 = 64 << 10;

fn memfd() -> Option<File> {
    // SAFETY: memfd_create takes a NUL-terminated name (a literal here) and
    // flags; it returns a new descriptor or -1, checked below.
    let fd = unsafe { libc::memfd_create(c"vmstor-fuzz".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let f = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    f.set_len(MEMFD_SIZE).ok()?;
    Some(f)
}

fn descriptors(n: usize, ram: &File) -> Vec<OwnedFd> {
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let fd: Option<OwnedFd> = if i == 0 {
            ram.try_clone().ok().map(OwnedFd::from)
        } else {
            EventFd::new(libc::EFD_NONBLOCK).ok().map(|e| {
                use std::os::fd::IntoRawFd;
                // SAFETY: `into_raw_fd` released the descriptor the EventFd
                // owned; we take over that ownership.
                unsafe { OwnedFd::from_raw_fd(e.into_raw_fd()) }
            })
        };
        if let Some(fd) = fd {
            v.push(fd);
        }
    }
    v
}

/// Plays `data` against a fresh remote. See the module docs. Returns how many
/// messages the remote handled.
pub fn fuzz_entry(data: &[u8]) -> usize {
    let mut handled = 0;
    let Some(ram) = memfd() else { return 0 };
    let mut remote = Remote::new(TestDevice::new(), IrqLine::new());
    let mut rest = data;
    while rest.len() >= HEADER_SIZE {
        let Ok(hdr) = MsgHeader::read_from_bytes(&rest[..HEADER_SIZE]) else {
            break;
        };
        rest = &rest[HEADER_SIZE..];
        let Ok((cmd, size)) = wire::check_header(&hdr) else {
            break;
        };
        if rest.len() < size {
            break;
        }
        let (payload, tail) = rest.split_at(size);
        rest = tail;
        let fds = descriptors(usize::from(hdr.pad[0] % 10), &ram);
        let Ok(msg) = wire::decode(cmd, payload, fds.len()) else {
            break;
        };
        let read_size = match &msg {
            Message::CfgRead { len, .. } => Some(*len),
            Message::BarRead { size, .. } => Some(*size),
            _ => None,
        };
        let reply = remote.handle(msg, fds);
        assert_eq!(
            reply.is_some(),
            cmd.spec().reply,
            "{cmd:?}: reply discipline"
        );
        if let (Some(v), Some(sz)) = (reply, read_size) {
            assert_eq!(
                v & !size_mask(sz),
                0,
                "{cmd:?}: value wider than the access"
            );
        }
        assert!(remote.sysmem().mapped_bytes() <= 8 * MEMFD_SIZE);
        handled += 1;
    }
    handled
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{encode, Command};

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// The checked-in seed corpus reaches the device (and stops where meant to).
    #[test]
    fn seed_corpus() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/qemu_proxy");
        let run = |name: &str| fuzz_entry(&std::fs::read(dir.join(name)).unwrap());
        assert_eq!(run("realize"), 2 + 24 + 1);
        assert_eq!(run("registers"), 17);
        assert_eq!(run("malformed"), 1);
    }

    /// Random byte strings, and streams of well-formed headers with random
    /// payloads (which reach the device instead of stopping at the header).
    #[test]
    fn random_inputs_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut handled = 0;
        for _ in 0..1500 {
            let n = (rng.next() % 300) as usize;
            let v: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            fuzz_entry(&v);
        }
        let sizes = [192usize, 8, 12, 12, 24, 24, 0, 0];
        for _ in 0..1500 {
            let mut stream = Vec::new();
            for _ in 0..(rng.next() % 12) {
                let c = (rng.next() % 8) as i32;
                let cmd = Command::from_raw(c).unwrap();
                let mut payload: Vec<u8> =
                    (0..sizes[c as usize]).map(|_| rng.next() as u8).collect();
                // keep config/BAR sizes plausible half the time
                if matches!(cmd, Command::PciCfgRead | Command::PciCfgWrite) && rng.next() % 2 == 0
                {
                    payload[0] = (rng.next() % 256) as u8;
                    payload[1..4].fill(0);
                    payload[8..12]
                        .copy_from_slice(&[1u32, 2, 4][(rng.next() % 3) as usize].to_le_bytes());
                }
                if matches!(cmd, Command::BarRead | Command::BarWrite) && rng.next() % 2 == 0 {
                    payload[16..20]
                        .copy_from_slice(&[1u32, 2, 4, 8][(rng.next() % 4) as usize].to_le_bytes());
                    payload[20] = (rng.next() % 2) as u8;
                }
                if cmd == Command::SyncSysmem {
                    // small regions inside the memfd most of the time
                    for i in 0..8 {
                        let g = (rng.next() % 16) << 16;
                        let s = (rng.next() % 16 + 1) << 12;
                        let o = (rng.next() % 16) << 12;
                        payload[i * 8..i * 8 + 8].copy_from_slice(&g.to_le_bytes());
                        payload[64 + i * 8..72 + i * 8].copy_from_slice(&s.to_le_bytes());
                        payload[128 + i * 8..136 + i * 8].copy_from_slice(&o.to_le_bytes());
                    }
                }
                let mut m = encode(cmd, &payload);
                m[4] = match cmd {
                    Command::SyncSysmem => (rng.next() % 3) as u8,
                    Command::SetIrqfd => 2,
                    _ => 0,
                };
                stream.extend_from_slice(&m);
            }
            handled += fuzz_entry(&stream);
        }
        // the structured streams must get past the decoder most of the time
        assert!(handled > 1000, "only {handled} messages reached the remote");
    }
}

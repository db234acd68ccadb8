//! The remote over a real socket pair, with this test playing QEMU's proxy:
//! descriptors by SCM_RIGHTS, reply discipline, BAR decoding, DMA through a
//! shared memfd, INTx through the irqfd, reset, and a malformed message.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::Duration;

use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;
use vmstor_qemu_proxy::irq::IrqLine;
use vmstor_qemu_proxy::server::{serve, Remote, ServeError, Stats};
use vmstor_qemu_proxy::testdev::{self, Reg, TestDevice};
use vmstor_qemu_proxy::wire::{encode, Command, HEADER_SIZE};

const RAM_GPA: u64 = 0x10_0000;
const RAM_SIZE: u64 = 0x4_0000;
const BAR0: u32 = 0xfebf_0000;
const BAR1: u32 = 0xc040;

struct Proxy {
    sock: UnixStream,
}

impl Proxy {
    fn send(&mut self, cmd: Command, payload: &[u8], fds: &[i32]) {
        let m = encode(cmd, payload);
        if fds.is_empty() {
            self.sock.write_all(&m).unwrap();
        } else {
            let n = self.sock.send_with_fds(&[&m[..]], fds).unwrap();
            assert_eq!(n, m.len());
        }
    }

    fn ret(&mut self) -> u64 {
        let mut b = [0u8; HEADER_SIZE + 8];
        self.sock.read_exact(&mut b).unwrap();
        assert_eq!(&b[..4], &1i32.to_le_bytes(), "a RET");
        assert_eq!(&b[8..16], &8u64.to_le_bytes());
        u64::from_le_bytes(b[16..].try_into().unwrap())
    }

    fn cfg(&mut self, cmd: Command, addr: u32, val: u32, len: i32) -> u64 {
        let mut p = Vec::new();
        p.extend_from_slice(&addr.to_le_bytes());
        p.extend_from_slice(&val.to_le_bytes());
        p.extend_from_slice(&len.to_le_bytes());
        self.send(cmd, &p, &[]);
        self.ret()
    }

    fn bar(&mut self, cmd: Command, addr: u64, val: u64, size: u32, memory: bool) -> u64 {
        let mut p = Vec::new();
        p.extend_from_slice(&addr.to_le_bytes());
        p.extend_from_slice(&val.to_le_bytes());
        p.extend_from_slice(&size.to_le_bytes());
        p.extend_from_slice(&[memory as u8, 0, 0, 0]);
        self.send(cmd, &p, &[]);
        self.ret()
    }

    fn mmio_w(&mut self, reg: u64, val: u64, size: u32) {
        assert_eq!(
            self.bar(Command::BarWrite, u64::from(BAR0) + reg, val, size, true),
            0
        );
    }

    fn mmio_r(&mut self, reg: u64, size: u32) -> u64 {
        self.bar(Command::BarRead, u64::from(BAR0) + reg, 0, size, true)
    }
}

fn sysmem_payload(regions: &[(u64, u64, i64)]) -> Vec<u8> {
    let mut p = vec![0u8; 192];
    for (i, (g, s, o)) in regions.iter().enumerate() {
        p[i * 8..i * 8 + 8].copy_from_slice(&g.to_le_bytes());
        p[64 + i * 8..72 + i * 8].copy_from_slice(&s.to_le_bytes());
        p[128 + i * 8..136 + i * 8].copy_from_slice(&o.to_le_bytes());
    }
    p
}

/// The remote's thread: its result and the INTx edges it delivered.
type RemoteThread = thread::JoinHandle<(Result<Stats, ServeError>, u64)>;

fn start() -> (Proxy, RemoteThread) {
    let (a, b) = UnixStream::pair().unwrap();
    let h = thread::spawn(move || {
        let mut r = Remote::new(TestDevice::new(), IrqLine::new());
        let res = serve(&mut r, b);
        (res, r.irq().edges())
    });
    (Proxy { sock: a }, h)
}

#[test]
fn proxy_session() {
    let (mut p, h) = start();
    // guest RAM: a memfd-like file, mapped at RAM_GPA from offset 0x1000
    let ram = tempfile::tempfile().unwrap();
    ram.set_len(RAM_SIZE + 0x1000).unwrap();
    let pl = sysmem_payload(&[(RAM_GPA, RAM_SIZE, 0x1000)]);
    p.send(Command::SyncSysmem, &pl, &[ram.as_raw_fd()]);
    // the same layout again (QEMU repeats it): ignored, and no RET for either
    p.send(Command::SyncSysmem, &pl, &[ram.as_raw_fd()]);
    let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let resample = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    p.send(
        Command::SetIrqfd,
        &[],
        &[irq.as_raw_fd(), resample.as_raw_fd()],
    );

    // identity through config reads; the next bytes on the socket are this RET
    let id = p.cfg(Command::PciCfgRead, 0, 0, 4);
    assert_eq!(
        id,
        u64::from(testdev::VENDOR_ID) | u64::from(testdev::DEVICE_ID) << 16
    );
    assert_eq!(p.cfg(Command::PciCfgRead, 0x3d, 0, 1), 1, "INTA#");
    // BAR sizing as QEMU's proxy and the guest do it
    assert_eq!(p.cfg(Command::PciCfgWrite, 0x10, 0xffff_ffff, 4), 0);
    assert_eq!(p.cfg(Command::PciCfgRead, 0x10, 0, 4), 0xffff_f000);
    assert_eq!(p.cfg(Command::PciCfgWrite, 0x14, 0xffff_ffff, 4), 0);
    assert_eq!(p.cfg(Command::PciCfgRead, 0x14, 0, 4), 0xffff_ffe1);
    // before assignment nothing decodes: master abort
    assert_eq!(p.mmio_r(0, 4), 0xffff_ffff);
    p.cfg(Command::PciCfgWrite, 0x10, BAR0, 4);
    p.cfg(Command::PciCfgWrite, 0x14, BAR1, 4);
    p.cfg(Command::PciCfgWrite, 0x04, 0x3, 2);
    assert_eq!(p.mmio_r(Reg::Id as u64, 4), u64::from(testdev::ID_VALUE));
    p.mmio_w(Reg::Scratch as u64 + 8, 0x1122_3344_5566_7788, 8);
    assert_eq!(p.mmio_r(Reg::Scratch as u64 + 8, 8), 0x1122_3344_5566_7788);
    assert_eq!(p.mmio_r(Reg::Scratch as u64 + 12, 2), 0x3344);
    // I/O BAR
    assert_eq!(
        p.bar(
            Command::BarWrite,
            u64::from(BAR1) + 4,
            0xa5a5_5a5a,
            4,
            false
        ),
        0
    );
    assert_eq!(
        p.bar(Command::BarRead, u64::from(BAR1) + 4, 0, 4, false),
        0xa5a5_5a5a
    );
    assert_eq!(
        p.bar(Command::BarRead, u64::from(BAR1) + 32, 0, 1, false),
        0xff,
        "past the BAR"
    );
    assert_eq!(
        p.bar(Command::BarRead, u64::from(BAR1) + 4, 0, 4, true),
        0xffff_ffff,
        "wrong space"
    );
    assert_eq!(p.mmio_r(Reg::RamMib as u64, 4), 0, "256 KiB is 0 MiB");
    assert_eq!(
        p.mmio_r(Reg::SysmemGen as u64, 4),
        2,
        "initial empty map + one layout"
    );

    // DMA: the device finds a needle in guest RAM and writes next to it
    let needle = b"NEEDLE-4f1c9a77";
    ram.write_all_at(needle, 0x1000 + 0x2345).unwrap();
    for (i, c) in needle.chunks(4).enumerate() {
        let mut w = [0u8; 4];
        w[..c.len()].copy_from_slice(c);
        p.mmio_w(
            Reg::Needle as u64 + 4 * i as u64,
            u64::from(u32::from_le_bytes(w)),
            4,
        );
    }
    p.mmio_w(Reg::DmaCmd as u64, 1, 4);
    assert_eq!(
        p.mmio_r(Reg::DmaStatus as u64, 4),
        u64::from(testdev::status::DONE)
    );
    assert_eq!(p.mmio_r(Reg::DmaGpa as u64, 8), RAM_GPA + 0x2345);
    let mut mark = [0u8; 15];
    ram.read_exact_at(&mut mark, 0x1000 + 0x2345 + needle.len() as u64 + 1)
        .unwrap();
    assert_eq!(&mark, testdev::REMOTE_MARK);
    // a guest-chosen address outside RAM: a status, and the file is untouched
    p.mmio_w(Reg::DmaAddr as u64, RAM_GPA + RAM_SIZE - 8, 8);
    p.mmio_w(Reg::DmaCmd as u64, 2, 4);
    assert_eq!(
        p.mmio_r(Reg::DmaStatus as u64, 4),
        u64::from(testdev::status::BAD_ADDRESS)
    );
    p.mmio_w(Reg::DmaAddr as u64, RAM_GPA, 8);
    p.mmio_w(Reg::DmaCmd as u64, 2, 4);
    let mut tag = [0u8; 16];
    ram.read_exact_at(&mut tag, 0x1000).unwrap();
    assert_eq!(&tag, testdev::DMA_TAG);

    // INTx: a rising edge writes the irqfd once; status.INTERRUPT follows
    p.mmio_w(Reg::Irq as u64, 1, 4);
    assert_eq!(irq.read().unwrap(), 1);
    assert_eq!(p.cfg(Command::PciCfgRead, 0x06, 0, 2) & 0x8, 0x8);
    // the guest acknowledges while the line is still high: kicked again
    resample.write(1).unwrap();
    let mut again = None;
    for _ in 0..200 {
        if let Ok(v) = irq.read() {
            again = Some(v);
            break;
        }
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(again, Some(1), "resample re-kicks a high line");
    p.mmio_w(Reg::Irq as u64, 0, 4);

    // reset: registers and config back to power-on, and a RET
    p.send(Command::DeviceReset, &[], &[]);
    assert_eq!(p.ret(), 0);
    assert_eq!(p.cfg(Command::PciCfgRead, 0x10, 0, 4), 0);
    assert_eq!(p.cfg(Command::PciCfgRead, 0x06, 0, 2) & 0x8, 0);

    // clean close between messages: Ok
    drop(p);
    let (res, edges) = h.join().unwrap();
    let stats = res.expect("clean close");
    assert_eq!(edges, 1);
    assert_eq!(stats.sync_sysmem, 2);
    assert_eq!(stats.sysmem_changes, 1);
    assert_eq!(stats.set_irqfd, 1);
    assert_eq!(stats.resets, 1);
    assert!(stats.bar_unclaimed >= 3);
}

#[test]
fn malformed_messages_end_the_connection() {
    let cases: Vec<Vec<u8>> = vec![
        // unknown command
        encode(Command::DeviceReset, &[])
            .iter()
            .enumerate()
            .map(|(i, b)| if i == 0 { 42 } else { *b })
            .collect(),
        // oversized payload announced (nothing else follows)
        {
            let mut m = encode(Command::BarRead, &[]);
            m[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
            m
        },
        // config read past the end of config space
        {
            let mut p = Vec::new();
            p.extend_from_slice(&254u32.to_le_bytes());
            p.extend_from_slice(&0u32.to_le_bytes());
            p.extend_from_slice(&4i32.to_le_bytes());
            encode(Command::PciCfgRead, &p)
        },
        // SYNC_SYSMEM without descriptors
        encode(Command::SyncSysmem, &sysmem_payload(&[(0, 0x1000, 0)])),
        // a RET sent to the remote
        encode(Command::Ret, &0u64.to_le_bytes()),
        // truncated payload then close
        encode(Command::BarRead, &[0u8; 24])[..20].to_vec(),
    ];
    for (i, m) in cases.into_iter().enumerate() {
        let (mut p, h) = start();
        p.sock.write_all(&m).unwrap();
        p.sock.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        p.sock.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "case {i}: no reply to a malformed message");
        let (res, _) = h.join().unwrap();
        assert!(res.is_err(), "case {i}: connection ends with an error");
    }
}

#[test]
fn sysmem_past_eof_leaves_no_ram() {
    let (mut p, h) = start();
    let ram = tempfile::tempfile().unwrap();
    ram.set_len(0x1000).unwrap();
    p.send(
        Command::SyncSysmem,
        &sysmem_payload(&[(0, 0x10_0000, 0)]),
        &[ram.as_raw_fd()],
    );
    p.cfg(Command::PciCfgWrite, 0x10, BAR0, 4);
    assert_eq!(p.mmio_r(Reg::RamMib as u64, 4), 0);
    p.mmio_w(Reg::DmaAddr as u64, 0x10, 8);
    p.mmio_w(Reg::DmaCmd as u64, 2, 4);
    assert_eq!(
        p.mmio_r(Reg::DmaStatus as u64, 4),
        u64::from(testdev::status::BAD_ADDRESS)
    );
    drop(p);
    let (res, _) = h.join().unwrap();
    assert_eq!(res.unwrap().sysmem_errors, 1);
}

//! `vmstor serve --vhost-user-blk` driven through a real vhost-user front
//! end (rust-vmm `vhost`'s `Frontend`): guest memory is a memfd shared with
//! the daemon, virtqueues are laid out in it by this file's tiny driver,
//! kicks and interrupts are eventfds. The daemon is the real binary; its
//! counters file (JSON) is how the host side is observed.

#[path = "serve_common.rs"]
mod common;

use common::*;

use std::fs::File;
use std::process::Command;
use std::time::Duration;

use vhost::vhost_user::message::VhostUserConfigFlags;
use vhost::vhost_user::VhostUserFrontend;
use vhost::VhostBackend;
use vm_memory::{Bytes, GuestAddress};

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
const F_FLUSH: u64 = 1 << 9;
const F_CONFIG_WCE: u64 = 1 << 11;
const F_MQ: u64 = 1 << 12;
const F_VERSION_1: u64 = 1 << 32;
/// Offset of `writeback` in `struct virtio_blk_config`.
const WRITEBACK_OFFSET: u32 = 32;

impl Daemon {
    /// Starts `vmstor serve` on a fresh 1 MiB image with `extra` export
    /// options.
    fn start(extra: &[&str]) -> Daemon {
        Daemon::start_in(tempfile::tempdir().unwrap(), extra)
    }

    /// Like [`Daemon::start`], with `dir` prepared by the caller (extra
    /// images for extra exports).
    fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Daemon {
        Daemon::start_env(dir, extra, &[])
    }

    /// Like [`Daemon::start_in`], with extra environment variables.
    fn start_env(dir: tempfile::TempDir, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let image = dir.path().join("disk.img");
        File::create(&image).unwrap().set_len(IMAGE_SIZE).unwrap();
        let socket = dir.path().join("vu.sock");
        let mut args: Vec<String> = vec![
            "--vhost-user-blk".into(),
            socket.display().to_string(),
            "--image".into(),
            image.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Daemon::spawn_env(dir, args, socket, image, env)
    }
}

struct Req {
    ty: u32,
    sector: u64,
    /// Device-readable payload (OUT).
    out: Vec<u8>,
    /// Device-writable payload length (IN, GET_ID).
    in_len: usize,
}

impl Req {
    fn write(sector: u64, data: &[u8]) -> Req {
        Req {
            ty: T_OUT,
            sector,
            out: data.to_vec(),
            in_len: 0,
        }
    }
    fn read(sector: u64, len: usize) -> Req {
        Req {
            ty: T_IN,
            sector,
            out: Vec::new(),
            in_len: len,
        }
    }
    fn flush() -> Req {
        Req {
            ty: T_FLUSH,
            sector: 0,
            out: Vec::new(),
            in_len: 0,
        }
    }
    fn get_id() -> Req {
        Req {
            ty: T_GET_ID,
            sector: 0,
            out: Vec::new(),
            in_len: 20,
        }
    }
}

struct Reply {
    status: u8,
    data: Vec<u8>,
    used_len: u32,
}

impl Guest {
    /// Builds a virtio-blk request, posts it; returns (head, data addr,
    /// status addr).
    fn submit(&mut self, q: usize, r: &Req) -> (u16, u64, u64) {
        let hdr = self.alloc(16);
        self.mem.write_obj(r.ty.to_le(), GuestAddress(hdr)).unwrap();
        self.mem.write_obj(0u32, GuestAddress(hdr + 4)).unwrap();
        self.mem
            .write_obj(r.sector.to_le(), GuestAddress(hdr + 8))
            .unwrap();
        let mut descs = vec![(hdr, 16, false)];
        let mut data = 0;
        if !r.out.is_empty() {
            data = self.alloc(r.out.len());
            self.mem.write_slice(&r.out, GuestAddress(data)).unwrap();
            descs.push((data, r.out.len() as u32, false));
        }
        if r.in_len > 0 {
            data = self.alloc(r.in_len);
            self.mem
                .write_slice(&vec![0xee; r.in_len], GuestAddress(data))
                .unwrap();
            descs.push((data, r.in_len as u32, true));
        }
        let status = self.alloc(1);
        self.mem.write_obj(0xffu8, GuestAddress(status)).unwrap();
        descs.push((status, 1, true));
        let head = self.post(q, &descs);
        (head, data, status)
    }

    /// Runs one request to completion.
    fn run(&mut self, q: usize, r: &Req, d: &Daemon) -> Reply {
        self.bump = 1 << 20;
        let (head, data, status) = self.submit(q, r);
        let (id, used_len) = self.wait_used(q, d);
        assert_eq!(id, head, "completions in submission order on an idle queue");
        self.reply(data, status, r.in_len, used_len)
    }

    fn reply(&self, data: u64, status: u64, in_len: usize, used_len: u32) -> Reply {
        let mut buf = vec![0; in_len];
        if in_len > 0 {
            self.mem.read_slice(&mut buf, GuestAddress(data)).unwrap();
        }
        Reply {
            status: self.mem.read_obj(GuestAddress(status)).unwrap(),
            data: buf,
            used_len,
        }
    }

    fn config(&mut self) -> Vec<u8> {
        let (_, buf) = self
            .fe
            .get_config(0, 60, VhostUserConfigFlags::WRITABLE, &[0u8; 60])
            .unwrap();
        buf
    }

    fn set_writeback(&mut self, on: bool) -> Result<(), vhost::Error> {
        self.fe.set_config(
            WRITEBACK_OFFSET,
            VhostUserConfigFlags::WRITABLE,
            &[u8::from(on)],
        )
    }
}

const WANT: u64 = F_FLUSH | F_CONFIG_WCE | F_VERSION_1 | F_EVENT_IDX | F_MQ;

#[test]
fn usage_errors_exit_2_and_help_lists_options() {
    let out = Command::new(env!("CARGO_BIN_EXE_vmstor"))
        .args(["serve", "--vhost-user-blk", "/nonexistent/s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs --image"));
    let out = Command::new(env!("CARGO_BIN_EXE_vmstor"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--vhost-user-blk",
        "--image",
        "--werror",
        "--counters",
        "SIGUSR2",
    ] {
        assert!(help.contains(opt), "{opt} missing from help");
    }
}

#[test]
fn flush_is_fdatasync_writes_reach_the_image_and_sigterm_flushes_and_exits_0() {
    let mut d = Daemon::start(&["--serial", "vmstor-test"]);
    let mut g = Guest::connect(&d.socket, 1, WANT);
    assert_ne!(g.features & F_FLUSH, 0, "FLUSH is offered");
    let cfg = g.config();
    assert_eq!(
        u64::from_le_bytes(cfg[0..8].try_into().unwrap()),
        IMAGE_SIZE / 512
    );
    assert_eq!(
        cfg[WRITEBACK_OFFSET as usize], 1,
        "writeback cache by default"
    );

    let id = g.run(0, &Req::get_id(), &d);
    assert_eq!(id.status, 0);
    assert_eq!(&id.data[..11], b"vmstor-test");

    let data = pattern(1, 4096);
    let w = g.run(0, &Req::write(8, &data), &d);
    assert_eq!((w.status, w.used_len), (0, 1));
    let r = g.run(0, &Req::read(8, 4096), &d);
    assert_eq!(r.status, 0);
    assert_eq!(r.used_len, 4097, "data + status");
    assert_eq!(r.data, data);

    let before = d.counters_until("the write in the counters", |c| {
        num(&disk(c)["writes"]) == 1
    });
    let syncs = num(&disk(&before)["fdatasyncs"]);
    assert_eq!(num(&disk(&before)["flushes_asked"]), 0);
    assert_eq!(g.run(0, &Req::flush(), &d).status, 0);
    let after = d.counters_until("the flush in the counters", |c| {
        num(&disk(c)["flushes_asked"]) == 1
    });
    assert_eq!(
        num(&disk(&after)["fdatasyncs"]),
        syncs + 1,
        "a guest flush after a write is exactly one fdatasync"
    );
    assert_eq!(&d.image_bytes()[4096..8192], &data[..]);

    // A volatile write, then SIGTERM: the daemon flushes it and exits 0.
    let data2 = pattern(9, 512);
    assert_eq!(g.run(0, &Req::write(100, &data2), &d).status, 0);
    let status = d.terminate();
    assert_eq!(status.code(), Some(0), "log:\n{}", d.log());
    let last = d.counters()["exports"][0].clone();
    assert_eq!(num(&disk(&last)["writes"]), 2);
    assert_eq!(
        num(&disk(&last)["fdatasyncs"]),
        syncs + 2,
        "the exit flush covers the last write"
    );
    assert_eq!(&d.image_bytes()[51200..51712], &data2[..]);
    assert!(d.log().contains("stopping"), "{}", d.log());
}

#[test]
fn writeback_1_to_0_flushes_before_the_config_write_is_acknowledged() {
    let mut d = Daemon::start(&[]);
    let mut g = Guest::connect(&d.socket, 1, WANT);
    assert_eq!(g.run(0, &Req::write(0, &pattern(3, 4096)), &d).status, 0);
    let c0 = d.counters_until("the write", |c| num(&disk(c)["writes"]) == 1);
    let s0 = num(&disk(&c0)["fdatasyncs"]);
    assert!(disk(&c0)["write_cache"].as_bool().unwrap());

    // REPLY_ACK: set_config returns once the daemon answered, i.e. after
    // the flush (no SIGUSR1 race: the counters are read afterwards).
    g.set_writeback(false).unwrap();
    let c1 = d.counters_until("write cache off", |c| {
        disk(c)["write_cache"].as_bool() == Some(false)
    });
    assert_eq!(
        num(&disk(&c1)["fdatasyncs"]),
        s0 + 1,
        "1→0 flushed the dirty write"
    );
    assert_eq!(g.config()[WRITEBACK_OFFSET as usize], 0);
    // Write-through now: a write is durable on completion, so the exit has
    // nothing left to flush beyond it (the flush is elided or shared).
    assert_eq!(g.run(0, &Req::write(16, &pattern(4, 512)), &d).status, 0);

    // Back to writeback (FLUSH and CONFIG_WCE negotiated).
    g.set_writeback(true).unwrap();
    let c2 = d.counters_until("write cache on", |c| {
        disk(c)["write_cache"].as_bool() == Some(true)
    });
    assert_eq!(num(&disk(&c2)["fdatasyncs"]), s0 + 1, "0→1 needs no flush");
    assert_eq!(g.config()[WRITEBACK_OFFSET as usize], 1);
    assert_eq!(d.terminate().code(), Some(0));
}

#[test]
fn a_driver_without_flush_gets_write_through() {
    let mut d = Daemon::start(&[]);
    let mut g = Guest::connect(&d.socket, 1, F_VERSION_1);
    assert_eq!(g.features & F_FLUSH, 0);
    assert_eq!(g.run(0, &Req::write(0, &pattern(5, 512)), &d).status, 0);
    let c = d.counters_until("the write", |c| num(&disk(c)["writes"]) == 1);
    assert_eq!(disk(&c)["write_cache"].as_bool(), Some(false));
    assert_eq!(d.terminate().code(), Some(0));
}

#[test]
fn stop_policy_holds_a_failed_write_until_sigusr2() {
    // Host op 1 (the first write) fails with ENOSPC; --werror stop holds it.
    let mut d = Daemon::start(&["--werror", "stop", "--x-inject-fault", "1:enospc"]);
    let mut g = Guest::connect(&d.socket, 1, WANT);
    let data = pattern(7, 4096);
    g.bump = 1 << 20;
    let (head, _, status) = g.submit(0, &Req::write(24, &data));
    let c = d.counters_until("the held write", |c| num(&disk(c)["held_now"]) == 1);
    assert_eq!(disk(&c)["errors"]["ENOSPC"], 1);
    assert!(g.try_used(0).is_none(), "a held request is not completed");
    assert_eq!(g.mem.read_obj::<u8>(GuestAddress(status)).unwrap(), 0xff);

    d.signal(libc::SIGUSR2);
    let (id, len) = g.wait_used(0, &d);
    assert_eq!((id, len), (head, 1));
    assert_eq!(
        g.mem.read_obj::<u8>(GuestAddress(status)).unwrap(),
        0,
        "retried OK"
    );
    let r = g.run(0, &Req::read(24, 4096), &d);
    assert_eq!(r.data, data);
    let c = d.counters_until("resumed", |c| num(&disk(c)["held_now"]) == 0);
    assert_eq!(num(&c["status_ioerr"]), 0, "the guest never saw the error");
    assert!(d.log().contains("SIGUSR2"));
    assert_eq!(d.terminate().code(), Some(0));
}

#[test]
fn sigterm_answers_held_requests_with_ioerr_and_exits_0() {
    let mut d = Daemon::start(&["--werror", "stop", "--x-inject-fault", "1:eio"]);
    let mut g = Guest::connect(&d.socket, 1, WANT);
    g.bump = 1 << 20;
    let (head, _, status) = g.submit(0, &Req::write(0, &pattern(8, 512)));
    d.counters_until("the held write", |c| num(&disk(c)["held_now"]) == 1);
    assert_eq!(d.terminate().code(), Some(0), "log:\n{}", d.log());
    // The daemon completed it before closing the connection.
    let (id, len) = g.try_used(0).expect("completed at shutdown");
    assert_eq!((id, len), (head, 1));
    assert_eq!(
        g.mem.read_obj::<u8>(GuestAddress(status)).unwrap(),
        1,
        "IOERR"
    );
    let c = d.counters()["exports"][0].clone();
    assert_eq!(num(&c["held_failed"]), 1);
}

#[test]
fn reconnect_after_disconnect_keeps_every_completed_write() {
    let mut d = Daemon::start(&[]);
    let data = pattern(11, 4096);
    {
        let mut g = Guest::connect(&d.socket, 1, WANT);
        assert_eq!(g.run(0, &Req::write(32, &data), &d).status, 0);
        let c = d.counters_until("the write", |c| num(&disk(c)["writes"]) == 1);
        assert_eq!(num(&disk(&c)["fdatasyncs"]), 0, "nothing flushed yet");
        // The front end goes away without a word (like a killed QEMU).
    }
    // The disconnect flush makes the completed write durable, then the
    // counters file is rewritten.
    let c = d.counters_until("the disconnect flush", |c| num(&disk(c)["fdatasyncs"]) == 1);
    assert_eq!(num(&c["connections"]), 1);
    assert_eq!(&d.image_bytes()[16384..20480], &data[..]);

    let mut g = Guest::connect(&d.socket, 1, WANT);
    let r = g.run(0, &Req::read(32, 4096), &d);
    assert_eq!((r.status, r.data), (0, data));
    let c = d.counters_until("second connection", |c| num(&c["connections"]) == 2);
    assert_eq!(num(&disk(&c)["reads"]), 1);
    assert_eq!(d.terminate().code(), Some(0));
}

#[test]
fn two_queues_each_complete_their_own_requests() {
    let mut d = Daemon::start(&["--queues", "2"]);
    let mut g = Guest::connect(&d.socket, 2, WANT);
    assert_ne!(g.features & F_MQ, 0);
    assert_eq!(
        u16::from_le_bytes(g.config()[34..36].try_into().unwrap()),
        2,
        "num_queues"
    );
    let a = pattern(21, 4096);
    let b = pattern(22, 4096);
    g.bump = 1 << 20;
    let (ha, _, sa) = g.submit(0, &Req::write(0, &a));
    let (hb, _, sb) = g.submit(1, &Req::write(8, &b));
    assert_eq!(g.wait_used(0, &d).0, ha);
    assert_eq!(g.wait_used(1, &d).0, hb);
    assert_eq!(g.mem.read_obj::<u8>(GuestAddress(sa)).unwrap(), 0);
    assert_eq!(g.mem.read_obj::<u8>(GuestAddress(sb)).unwrap(), 0);
    assert_eq!(g.run(1, &Req::read(0, 4096), &d).data, a);
    assert_eq!(g.run(0, &Req::read(8, 4096), &d).data, b);
    assert_eq!(d.terminate().code(), Some(0));
}

#[test]
fn a_chain_without_status_stops_only_its_queue() {
    let mut d = Daemon::start(&["--queues", "2"]);
    let mut g = Guest::connect(&d.socket, 2, WANT);
    // Header only, device-readable: nowhere to write a status.
    let hdr = g.alloc(16);
    g.mem.write_obj(T_IN, GuestAddress(hdr)).unwrap();
    g.post(0, &[(hdr, 16, false)]);
    let c = d.counters_until("the bad chain", |c| num(&c["bad_chains"]) == 1);
    assert_eq!(num(&c["chains"]), 1);
    assert!(g.try_used(0).is_none());
    // Queue 1 still works.
    assert_eq!(g.run(1, &Req::write(0, &pattern(1, 512)), &d).status, 0);
    assert_eq!(d.terminate().code(), Some(0));
    assert!(d
        .log()
        .contains("queue stopped until the front end resets it"));
}

#[test]
fn out_of_range_read_is_ioerr_without_host_io() {
    let mut d = Daemon::start(&[]);
    let mut g = Guest::connect(&d.socket, 1, WANT);
    let r = g.run(0, &Req::read(IMAGE_SIZE / 512, 512), &d);
    assert_eq!((r.status, r.used_len), (1, 1));
    let c = d.counters_until("the reject", |c| num(&c["status_ioerr"]) == 1);
    assert_eq!(num(&disk(&c)["reads"]), 0, "rejected before hostio");
    assert_eq!(d.terminate().code(), Some(0));
}

#[test]
fn read_only_export_offers_ro_and_refuses_writes() {
    let mut d = Daemon::start(&["--readonly"]);
    let mut g = Guest::connect(&d.socket, 1, WANT | (1 << 5));
    assert_ne!(g.features & (1 << 5), 0, "VIRTIO_BLK_F_RO");
    let w = g.run(0, &Req::write(0, &pattern(1, 512)), &d);
    assert_eq!(w.status, 1, "IOERR");
    assert_eq!(g.run(0, &Req::read(0, 512), &d).status, 0);
    let c = d.counters_until("the read", |c| num(&disk(c)["reads"]) == 1);
    assert_eq!(num(&disk(&c)["writes"]), 0, "refused before hostio");
    assert_eq!(disk(&c)["read_only"], true);
    assert_eq!(d.terminate().code(), Some(0));
}

#[test]
fn get_vring_base_completes_everything_first() {
    // The front end stops the queue while a request is held: the daemon
    // must answer it (IOERR) before replying, so the base is exact.
    let mut d = Daemon::start(&["--werror", "stop", "--x-inject-fault", "1:eio"]);
    let mut g = Guest::connect(&d.socket, 1, WANT);
    g.bump = 1 << 20;
    let (head, _, status) = g.submit(0, &Req::write(0, &pattern(2, 512)));
    d.counters_until("the held write", |c| num(&disk(c)["held_now"]) == 1);
    let base = g.fe.get_vring_base(0).unwrap();
    assert_eq!(base, 1, "one chain taken");
    assert_eq!(g.try_used(0), Some((head, 1)));
    assert_eq!(
        g.mem.read_obj::<u8>(GuestAddress(status)).unwrap(),
        1,
        "IOERR"
    );
    let c = d.counters_until("held_failed", |c| num(&c["held_failed"]) == 1);
    assert_eq!(num(&disk(&c)["held_now"]), 0);
    assert_eq!(d.terminate().code(), Some(0));
}

#[test]
fn garbage_on_the_socket_does_not_stop_the_daemon() {
    use std::io::Write;
    let mut d = Daemon::start(&[]);
    {
        let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
        // A header claiming a huge payload, then hang up.
        let _ = s.write_all(&[0xff; 12]);
        let _ = s.write_all(b"not vhost-user at all");
    }
    d.counters_until("the first connection to end", |c| {
        num(&c["connections"]) == 1
    });
    let mut g = Guest::connect(&d.socket, 1, WANT);
    assert_eq!(g.run(0, &Req::write(0, &pattern(3, 512)), &d).status, 0);
    let c = d.counters_until("second connection", |c| num(&c["connections"]) == 2);
    assert_eq!(num(&disk(&c)["writes"]), 1);
    assert_eq!(d.terminate().code(), Some(0));
}

#[test]
fn two_exports_in_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let img2 = dir.path().join("second.img");
    File::create(&img2)
        .unwrap()
        .set_len(IMAGE_SIZE * 2)
        .unwrap();
    let sock2 = dir.path().join("second.sock");
    let (s2, i2) = (sock2.display().to_string(), img2.display().to_string());
    let mut d = Daemon::start_in(
        dir,
        &[
            "--vhost-user-blk",
            &s2,
            "--image",
            &i2,
            "--cache",
            "writethrough",
        ],
    );
    d.wait_until("second socket", || sock2.exists());
    let mut a = Guest::connect(&d.socket, 1, WANT);
    let mut b = Guest::connect(&sock2, 1, WANT);
    assert_eq!(
        b.config()[WRITEBACK_OFFSET as usize],
        0,
        "writethrough preset"
    );
    assert_eq!(
        u64::from_le_bytes(b.config()[0..8].try_into().unwrap()),
        IMAGE_SIZE * 2 / 512
    );
    assert_eq!(a.run(0, &Req::write(0, &pattern(4, 512)), &d).status, 0);
    assert_eq!(b.run(0, &Req::write(0, &pattern(5, 512)), &d).status, 0);
    d.signal(libc::SIGUSR1);
    d.wait_until("both exports counted", || {
        d.signal(libc::SIGUSR1);
        std::thread::sleep(Duration::from_millis(20));
        let c = d.counters();
        c["exports"][1]["disks"][0]["writes"] == 1 && c["exports"][0]["disks"][0]["writes"] == 1
    });
    let c = d.counters();
    assert_eq!(c["exports"][0]["name"], "blk0");
    assert_eq!(c["exports"][1]["name"], "blk1");
    assert_eq!(c["exports"][1]["disks"][0]["write_cache"], false);
    assert_eq!(d.terminate().code(), Some(0));
    assert_eq!(&std::fs::read(&img2).unwrap()[..512], &pattern(5, 512)[..]);
}

#[test]
fn many_requests_in_flight_on_two_queues_all_complete() {
    many_requests_on_two_queues(&["--io-engine", "threads", "--io-threads", "4"]);
}

#[test]
fn many_requests_in_flight_on_two_queues_all_complete_on_io_uring() {
    // The default engine; on a kernel without io_uring this runs the
    // fallback pool (the executor test below checks which).
    many_requests_on_two_queues(&[]);
}

/// The executor a disk runs, from the counters file and the start log.
fn executor(d: &Daemon) -> (String, Option<String>) {
    // The file is written just after the socket appears.
    d.wait_until("the counters file", || d.counters()["exports"].is_array());
    let c = d.counters();
    let e = disk(&c["exports"][0]);
    let name = e["executor"]
        .as_str()
        .expect("executor is a string")
        .to_string();
    let why = e["io_uring_fallback"].as_str().map(String::from);
    let log = d.log();
    assert!(
        log.contains("disk opened") && log.contains(&format!("executor=\"{name}\"")),
        "start log names the executor {name}:\n{log}"
    );
    (name, why)
}

#[test]
fn the_executor_in_use_is_logged_and_counted() {
    let mut d = Daemon::start(&["--io-engine", "threads"]);
    assert_eq!(executor(&d), ("threads".into(), None));
    assert!(d.log().contains("io_engine=\"threads\""), "{}", d.log());
    assert_eq!(d.terminate().code(), Some(0));

    // The default asks for io_uring: it runs, or the reason it does not
    // is in the counters and the log.
    let mut d = Daemon::start(&[]);
    let (name, why) = executor(&d);
    match why {
        None => assert_eq!(name, "io_uring"),
        Some(why) => {
            assert_eq!(name, "threads");
            assert!(d.log().contains(&why), "{}", d.log());
        }
    }
    assert_eq!(d.terminate().code(), Some(0));

    // A forced fallback still serves, and says why.
    let mut d = Daemon::start_env(
        tempfile::tempdir().unwrap(),
        &[],
        &[("VMSTOR_DISABLE_IO_URING", "1")],
    );
    let (name, why) = executor(&d);
    assert_eq!(name, "threads");
    let why = why.expect("a fallback reason");
    assert!(why.contains("VMSTOR_DISABLE_IO_URING"), "{why}");
    assert!(d.log().contains("io_uring unavailable"), "{}", d.log());
    let mut g = Guest::connect(&d.socket, 1, WANT);
    let data = pattern(3, 4096);
    assert_eq!(g.run(0, &Req::write(0, &data), &d).status, 0);
    assert_eq!(g.run(0, &Req::read(0, 4096), &d).data, data);
    assert_eq!(d.terminate().code(), Some(0));
}

fn many_requests_on_two_queues(extra: &[&str]) {
    // 64 writes posted on each queue before waiting for any: completions
    // come back through the hostio eventfd on whichever vring thread wakes,
    // and each lands on its own queue's used ring.
    let mut args = vec!["--queues", "2"];
    args.extend_from_slice(extra);
    let mut d = Daemon::start(&args);
    let mut g = Guest::connect(&d.socket, 2, WANT);
    g.bump = 1 << 20;
    let mut posted = [Vec::new(), Vec::new()];
    for i in 0..64u64 {
        for (q, list) in posted.iter_mut().enumerate() {
            let block = i * 2 + q as u64;
            let (head, _, status) =
                g.submit(q, &Req::write(block * 8, &pattern(block as u8, 4096)));
            list.push((head, status));
        }
    }
    for (q, p) in posted.iter().enumerate() {
        let mut heads: Vec<u16> = (0..p.len()).map(|_| g.wait_used(q, &d).0).collect();
        heads.sort_unstable();
        let mut want: Vec<u16> = p.iter().map(|x| x.0).collect();
        want.sort_unstable();
        assert_eq!(heads, want, "queue {q}: every chain completed exactly once");
        for &(_, status) in p {
            assert_eq!(g.mem.read_obj::<u8>(GuestAddress(status)).unwrap(), 0);
        }
    }
    let img_len = 128 * 4096;
    let r = g.run(0, &Req::read(0, img_len), &d);
    for i in 0..128u64 {
        let want = pattern(i as u8, 4096);
        let off = (i * 4096) as usize;
        assert_eq!(&r.data[off..off + 4096], &want[..], "block {i}");
    }
    assert_eq!(d.terminate().code(), Some(0));
}

#[test]
fn a_socket_path_that_is_a_file_is_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("precious.img");
    std::fs::write(&img, b"keep me").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vmstor"))
        .args(["serve", "--vhost-user-blk"])
        .arg(&img)
        .arg("--image")
        .arg(&img)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a socket"));
    assert_eq!(std::fs::read(&img).unwrap(), b"keep me");
}

#[test]
fn a_socket_served_by_another_daemon_is_not_stolen() {
    let d = Daemon::start(&[]);
    let out = Command::new(env!("CARGO_BIN_EXE_vmstor"))
        .args(["serve", "--vhost-user-blk"])
        .arg(&d.socket)
        .arg("--image")
        .arg(&d.image)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("served by another process"));
    // The first daemon still serves.
    let mut g = Guest::connect(&d.socket, 1, WANT);
    assert_eq!(g.run(0, &Req::read(0, 512), &d).status, 0);
}

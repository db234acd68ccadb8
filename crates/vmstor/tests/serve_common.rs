//! Shared by the `vmstor serve` integration tests (included with `#[path]`):
//! the daemon under test, and a tiny vhost-user front end with guest memory
//! in a memfd and split virtqueues laid out in it. Built alone it is an
//! empty test target.
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::mmap::MmapRegion;
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap};
use vmm_sys_util::eventfd::EventFd;

pub(crate) const MEM_SIZE: usize = 4 << 20;
pub(crate) const QSIZE: u16 = 256;
pub(crate) const IMAGE_SIZE: u64 = 1 << 20;

pub(crate) const F_EVENT_IDX: u64 = 1 << 29;

pub(crate) const DESC_F_NEXT: u16 = 1;
pub(crate) const DESC_F_WRITE: u16 = 2;

/// Generous bound for anything the daemon does; tests never assert on time.
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);

pub(crate) struct Daemon {
    pub(crate) child: Option<Child>,
    pub(crate) socket: PathBuf,
    pub(crate) counters: PathBuf,
    pub(crate) log: PathBuf,
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) image: PathBuf,
}

impl Daemon {
    /// Runs `vmstor serve --counters DIR/counters.json ARGS...` with debug
    /// logs into DIR/daemon.log and waits for `socket` to appear.
    pub(crate) fn spawn(
        dir: tempfile::TempDir,
        args: Vec<String>,
        socket: PathBuf,
        image: PathBuf,
    ) -> Daemon {
        Daemon::spawn_env(dir, args, socket, image, &[])
    }

    /// Like [`Daemon::spawn`], with extra environment variables.
    pub(crate) fn spawn_env(
        dir: tempfile::TempDir,
        args: Vec<String>,
        socket: PathBuf,
        image: PathBuf,
        env: &[(&str, &str)],
    ) -> Daemon {
        let counters = dir.path().join("counters.json");
        let log = dir.path().join("daemon.log");
        let mut all: Vec<String> = vec![
            "serve".into(),
            "--counters".into(),
            counters.display().to_string(),
        ];
        all.extend(args);
        let child = Command::new(env!("CARGO_BIN_EXE_vmstor"))
            .args(&all)
            .env("VMSTOR_LOG", "debug")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let d = Daemon {
            child: Some(child),
            socket,
            counters,
            log,
            _dir: dir,
            image,
        };
        let mut d = d;
        let t = Instant::now();
        while !d.socket.exists() {
            if let Some(st) = d.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("daemon exited ({st}) before listening; log:\n{}", d.log());
            }
            assert!(t.elapsed() < PATIENCE, "no socket; log:\n{}", d.log());
            std::thread::sleep(Duration::from_millis(10));
        }
        d
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn wait_until(&self, what: &str, mut f: impl FnMut() -> bool) {
        let t = Instant::now();
        while !f() {
            assert!(
                t.elapsed() < PATIENCE,
                "gave up waiting for {what}; daemon log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub(crate) fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().unwrap().id() as i32;
        // SAFETY: plain kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }

    pub(crate) fn counters(&self) -> Value {
        std::fs::read_to_string(&self.counters)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(Value::Null)
    }

    /// Asks for fresh counters (SIGUSR1) until `f` holds for export 0.
    pub(crate) fn counters_until(&self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        self.wait_until(what, || {
            self.signal(libc::SIGUSR1);
            std::thread::sleep(Duration::from_millis(20));
            last = self.counters();
            f(&last["exports"][0])
        });
        last["exports"][0].clone()
    }

    /// SIGTERM, then the exit status.
    pub(crate) fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().unwrap();
        let t = Instant::now();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if t.elapsed() > PATIENCE {
                let _ = child.kill();
                panic!("daemon did not exit on SIGTERM; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub(crate) fn image_bytes(&self) -> Vec<u8> {
        std::fs::read(&self.image).unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub(crate) fn disk(c: &Value) -> &Value {
    &c["disks"][0]
}

pub(crate) fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// One split virtqueue laid out in guest memory.
pub(crate) struct Vq {
    pub(crate) desc: u64,
    pub(crate) avail: u64,
    pub(crate) used: u64,
    pub(crate) next_avail: u16,
    pub(crate) last_used: u16,
    pub(crate) next_desc: u16,
    pub(crate) kick: EventFd,
    pub(crate) call: EventFd,
}

/// A guest: memfd memory shared with the daemon, a front end, queues.
pub(crate) struct Guest {
    pub(crate) fe: Frontend,
    pub(crate) mem: GuestMemoryMmap,
    pub(crate) host_base: u64,
    pub(crate) queues: Vec<Vq>,
    pub(crate) bump: u64,
    pub(crate) features: u64,
}

pub(crate) fn memfd(size: usize) -> File {
    let name = c"vmstor-test-guest";
    // SAFETY: memfd_create with a valid C string; the fd is owned below.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create failed");
    // SAFETY: fd is a fresh, owned descriptor.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(size as u64).unwrap();
    f
}

impl Guest {
    /// Connects and negotiates `want` (masked by what is offered) with
    /// `queues` queues.
    pub(crate) fn connect(socket: &Path, queues: usize, want: u64) -> Guest {
        Guest::connect_with(
            socket,
            queues,
            want,
            VhostUserProtocolFeatures::CONFIG
                | VhostUserProtocolFeatures::MQ
                | VhostUserProtocolFeatures::REPLY_ACK,
        )
    }

    /// Like [`Guest::connect`], asking for protocol features `proto` (each
    /// must be offered).
    pub(crate) fn connect_with(
        socket: &Path,
        queues: usize,
        want: u64,
        proto: VhostUserProtocolFeatures,
    ) -> Guest {
        let file = memfd(MEM_SIZE);
        let region = MmapRegion::from_file(FileOffset::new(file, 0), MEM_SIZE).unwrap();
        let region = GuestRegionMmap::new(region, GuestAddress(0)).unwrap();
        let info = VhostUserMemoryRegionInfo::from_guest_region(&region).unwrap();
        let host_base = info.userspace_addr;
        let mem = GuestMemoryMmap::from_regions(vec![region]).unwrap();

        let mut fe = Frontend::connect(socket, queues as u64).unwrap();
        fe.set_owner().unwrap();
        let offered = fe.get_features().unwrap();
        assert_ne!(
            offered & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits(),
            0
        );
        let pf = fe.get_protocol_features().unwrap();
        assert!(pf.contains(proto), "offered {pf:?}");
        fe.set_protocol_features(proto).unwrap();
        assert!(fe.get_queue_num().unwrap() >= queues as u64);
        let features = (offered & want) | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        fe.set_features(features).unwrap();
        fe.set_mem_table(&[info]).unwrap();
        let mut g = Guest {
            fe,
            mem,
            host_base,
            queues: Vec::new(),
            bump: 1 << 20,
            features,
        };
        for q in 0..queues {
            g.add_queue(q);
        }
        g
    }

    pub(crate) fn add_queue(&mut self, q: usize) {
        let base = (q as u64) * 0x10000;
        let vq = Vq {
            desc: base,
            avail: base + 16 * u64::from(QSIZE),
            used: base + 0x8000,
            next_avail: 0,
            last_used: 0,
            next_desc: 0,
            kick: EventFd::new(0).unwrap(),
            call: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        };
        self.fe.set_vring_num(q, QSIZE).unwrap();
        self.fe
            .set_vring_addr(
                q,
                &VringConfigData {
                    queue_max_size: QSIZE,
                    queue_size: QSIZE,
                    flags: 0,
                    desc_table_addr: self.host_base + vq.desc,
                    used_ring_addr: self.host_base + vq.used,
                    avail_ring_addr: self.host_base + vq.avail,
                    log_addr: None,
                },
            )
            .unwrap();
        self.fe.set_vring_base(q, 0).unwrap();
        self.fe.set_vring_call(q, &vq.call).unwrap();
        self.fe.set_vring_kick(q, &vq.kick).unwrap();
        self.fe.set_vring_enable(q, true).unwrap();
        self.queues.push(vq);
    }

    pub(crate) fn alloc(&mut self, len: usize) -> u64 {
        let a = self.bump;
        self.bump += (len as u64).div_ceil(64) * 64 + 64;
        assert!(self.bump < MEM_SIZE as u64, "test guest out of memory");
        a
    }

    /// Posts raw descriptors `(addr, len, device_writable)` as one chain on
    /// queue `q` and kicks. Returns the head.
    pub(crate) fn post(&mut self, q: usize, descs: &[(u64, u32, bool)]) -> u16 {
        let event_idx = self.features & F_EVENT_IDX != 0;
        let vq = &mut self.queues[q];
        let head = vq.next_desc;
        for (i, &(addr, len, w)) in descs.iter().enumerate() {
            let idx = (vq.next_desc + i as u16) % QSIZE;
            let next = (idx + 1) % QSIZE;
            let mut flags = if w { DESC_F_WRITE } else { 0 };
            if i + 1 < descs.len() {
                flags |= DESC_F_NEXT;
            }
            let d = vq.desc + 16 * u64::from(idx);
            self.mem.write_obj(addr.to_le(), GuestAddress(d)).unwrap();
            self.mem
                .write_obj(len.to_le(), GuestAddress(d + 8))
                .unwrap();
            self.mem
                .write_obj(flags.to_le(), GuestAddress(d + 12))
                .unwrap();
            self.mem
                .write_obj(next.to_le(), GuestAddress(d + 14))
                .unwrap();
        }
        vq.next_desc = (vq.next_desc + descs.len() as u16) % QSIZE;
        let slot = vq.avail + 4 + 2 * u64::from(vq.next_avail % QSIZE);
        self.mem
            .write_obj(head.to_le(), GuestAddress(slot))
            .unwrap();
        vq.next_avail = vq.next_avail.wrapping_add(1);
        if event_idx {
            // used_event: interrupt on the next completion.
            let ue = vq.used + 4 + 8 * u64::from(QSIZE);
            self.mem
                .write_obj(vq.last_used.to_le(), GuestAddress(ue))
                .unwrap();
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.mem
            .write_obj(vq.next_avail.to_le(), GuestAddress(vq.avail + 2))
            .unwrap();
        vq.kick.write(1).unwrap();
        head
    }

    /// The next used entry of queue `q`, if there is one now.
    pub(crate) fn try_used(&mut self, q: usize) -> Option<(u16, u32)> {
        let vq = &mut self.queues[q];
        let idx: u16 = self.mem.read_obj(GuestAddress(vq.used + 2)).unwrap();
        if u16::from_le(idx) == vq.last_used {
            return None;
        }
        let e = vq.used + 4 + 8 * u64::from(vq.last_used % QSIZE);
        let id: u32 = self.mem.read_obj(GuestAddress(e)).unwrap();
        let len: u32 = self.mem.read_obj(GuestAddress(e + 4)).unwrap();
        vq.last_used = vq.last_used.wrapping_add(1);
        Some((u32::from_le(id) as u16, u32::from_le(len)))
    }

    pub(crate) fn wait_used(&mut self, q: usize, d: &Daemon) -> (u16, u32) {
        let t = Instant::now();
        loop {
            if let Some(u) = self.try_used(q) {
                return u;
            }
            assert!(
                t.elapsed() < PATIENCE,
                "no completion on queue {q}; daemon log:\n{}",
                d.log()
            );
            let _ = self.queues[q].call.read();
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

pub(crate) fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i * 7 % 251) as u8))
        .collect()
}

//! Per-export counters: what the transport saw (connections, chains,
//! statuses) next to what hostio did for each disk ([`CounterSnapshot`]:
//! requests by type, flushes asked, fdatasyncs issued, bytes bounced, host
//! errors). Printed on SIGUSR1 and on exit, and written as JSON to
//! `--counters PATH` (atomically: a temporary file renamed over it).
//!
//! The JSON field names are a contract with the guest test harness;
//! [`COUNTER_FIELDS`] lists them and drives the table in `docs/serve.md`.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde_json::{json, Map, Value};
use vmstor_hostio::{errno_name, CounterSnapshot, Disk};

/// Transport-level counters of one export.
#[derive(Debug, Default)]
pub(crate) struct ExportStats {
    /// Front-end connections accepted.
    pub connections: AtomicU64,
    /// Descriptor chains (guest requests) taken from the queues.
    pub chains: AtomicU64,
    /// Requests answered with an I/O error status.
    pub status_ioerr: AtomicU64,
    /// Requests answered "unsupported".
    pub status_unsupp: AtomicU64,
    /// Chains that could not be answered at all (the queue then stops).
    pub bad_chains: AtomicU64,
    /// Held requests failed because the daemon stopped or the front end
    /// stopped the queues before an operator resumed them.
    pub held_failed: AtomicU64,
}

/// Every counter field in the JSON, with its meaning (docs table).
pub(crate) const COUNTER_FIELDS: &[(&str, &str)] = &[
    ("connections", "front-end connections accepted (export)"),
    ("chains", "guest requests (descriptor chains) taken from the queues (export)"),
    ("status_ioerr", "requests answered with an I/O error status (export; vhost-user-blk only)"),
    ("status_unsupp", "requests answered \"unsupported\" (export; vhost-user-blk only)"),
    ("bad_chains", "chains that could not be answered; their queue stops until the front end resets it (export)"),
    ("held_failed", "held requests ended because the daemon or the front end stopped first: IOERR (blk), VIRTIO_SCSI_S_RESET (scsi) (export)"),
    ("requests", "hostio requests of every type (disk)"),
    ("reads", "read requests (disk)"),
    ("writes", "write requests, FUA included (disk)"),
    ("fua_writes", "writes the guest marked FUA (disk)"),
    ("flushes_asked", "flush requests from the guest (disk)"),
    ("discards", "discard requests (disk)"),
    ("write_zeroes", "write-zeroes requests (disk)"),
    ("fdatasyncs", "fdatasync calls issued: guest flushes, emulated FUA, write-cache switches, disconnect and exit flushes (disk)"),
    ("flushes_elided", "flushes completed without a syscall because nothing was written since the last fdatasync (disk)"),
    ("flushes_shared", "flushes satisfied by an fdatasync started after them (disk)"),
    ("bytes_bounced", "bytes copied through bounce buffers (disk)"),
    ("bytes_read", "bytes read from the image (disk)"),
    ("bytes_written", "bytes written to the image (disk)"),
    ("held", "requests held by the stop error policy so far (disk)"),
    ("held_now", "requests held right now, waiting for SIGUSR2 (disk)"),
    ("write_cache", "the guest-visible write cache is on (disk)"),
    ("errors", "host errors by errno name, e.g. {\"ENOSPC\": 1} (disk)"),
    ("executor", "the hostio executor running the disk's host I/O: io_uring or threads (disk)"),
    ("io_uring_fallback", "why io_uring was asked for (--io-engine io_uring) but the thread pool runs, e.g. \"io_uring_setup failed: ...\"; null when it was not asked for or runs (disk)"),
];

impl ExportStats {
    /// The export-level fields.
    pub(crate) fn json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        for (k, v) in [
            ("connections", &self.connections),
            ("chains", &self.chains),
            ("status_ioerr", &self.status_ioerr),
            ("status_unsupp", &self.status_unsupp),
            ("bad_chains", &self.bad_chains),
            ("held_failed", &self.held_failed),
        ] {
            m.insert(k.into(), json!(v.load(Relaxed)));
        }
        m
    }

    /// One-line summary.
    pub(crate) fn line(&self) -> String {
        format!(
            "connections={} chains={} status_ioerr={} status_unsupp={} bad_chains={} held_failed={}",
            self.connections.load(Relaxed),
            self.chains.load(Relaxed),
            self.status_ioerr.load(Relaxed),
            self.status_unsupp.load(Relaxed),
            self.bad_chains.load(Relaxed),
            self.held_failed.load(Relaxed)
        )
    }
}

/// Total hostio requests in a snapshot.
pub(crate) fn requests(s: &CounterSnapshot) -> u64 {
    s.reads + s.writes + s.flushes_asked + s.discards + s.write_zeroes
}

/// One disk's counters as JSON.
pub(crate) fn disk_json(disk: &Disk, image: &Path) -> Value {
    let s = disk.counters();
    let errors: Map<String, Value> = s
        .errors
        .iter()
        .map(|(e, n)| (errno_name(*e), json!(n)))
        .collect();
    json!({
        "image": image.display().to_string(),
        "cache": disk.policy().mode().map_or("custom", |m| m.name()),
        "read_only": disk.read_only(),
        "write_cache": disk.write_cache(),
        "requests": requests(&s),
        "reads": s.reads,
        "writes": s.writes,
        "fua_writes": s.fua_writes,
        "flushes_asked": s.flushes_asked,
        "discards": s.discards,
        "write_zeroes": s.write_zeroes,
        "fdatasyncs": s.fdatasyncs,
        "flushes_elided": s.flushes_elided,
        "flushes_shared": s.flushes_shared,
        "bytes_bounced": s.bytes_bounced,
        "bytes_read": s.bytes_read,
        "bytes_written": s.bytes_written,
        "held": s.held,
        "held_now": disk.held_count(),
        "errors": errors,
        "executor": s.executor,
        "io_uring_fallback": s.io_uring_fallback,
    })
}

/// One disk's counters on one line.
pub(crate) fn disk_line(disk: &Disk) -> String {
    let s = disk.counters();
    let mut line = format!(
        "requests={} {s} write_cache={} held_now={} executor={}",
        requests(&s),
        disk.write_cache(),
        disk.held_count(),
        s.executor
    );
    if let Some(why) = &s.io_uring_fallback {
        line.push_str(&format!(" io_uring_fallback={why:?}"));
    }
    line
}

/// Writes `v` to `path` atomically (temporary file, then rename). Several
/// threads may write the file at once (exports ending together): each
/// writes its own temporary file, so no rename finds its file taken by
/// another's, and the last rename wins with a complete file.
pub(crate) fn write_json(path: &Path, v: &Value) -> std::io::Result<()> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}.{n}", std::process::id()));
    let text = serde_json::to_string_pretty(v).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text + "\n")?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use vmstor_hostio::{CacheMode, DiskOptions, Policy};

    #[test]
    fn field_table_matches_the_json() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("i");
        std::fs::write(&img, vec![0u8; 4096]).unwrap();
        let disk = Arc::new(
            Disk::open(
                &img,
                Policy::from_mode(CacheMode::Writeback),
                DiskOptions::default(),
            )
            .unwrap(),
        );
        let mut keys: Vec<String> = ExportStats::default().json().keys().cloned().collect();
        if let Value::Object(m) = disk_json(&disk, &img) {
            keys.extend(m.keys().cloned());
        }
        for (f, _) in COUNTER_FIELDS {
            assert!(
                keys.iter().any(|k| k == f),
                "{f} is documented but not emitted"
            );
        }
        for k in &keys {
            let identity = ["image", "cache", "read_only"].contains(&k.as_str());
            assert!(
                identity || COUNTER_FIELDS.iter().any(|(f, _)| f == k),
                "{k} is emitted but not documented"
            );
        }
    }

    #[test]
    fn executor_is_reported_per_io_engine() {
        use crate::serve::cli::{DiskSpec, IoEngine};
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("i");
        std::fs::write(&img, vec![0u8; 4096]).unwrap();
        let spec = |io_engine| DiskSpec {
            image: Some(img.clone()),
            io_engine,
            io_threads: 2,
            ..DiskSpec::default()
        };
        let threads = crate::serve::open_disk(&spec(IoEngine::Threads)).unwrap();
        let j = disk_json(&threads, &img);
        assert_eq!(j["executor"], "threads");
        assert!(j["io_uring_fallback"].is_null());
        assert!(disk_line(&threads).ends_with(" executor=threads"));

        // io_uring, or the thread pool with the kernel's reason: never a
        // silent fallback.
        let uring = crate::serve::open_disk(&spec(IoEngine::IoUring)).unwrap();
        let info = uring.executor_info().clone();
        let j = disk_json(&uring, &img);
        let line = disk_line(&uring);
        match &info.fallback {
            None => {
                assert_eq!(j["executor"], "io_uring");
                assert!(j["io_uring_fallback"].is_null());
                assert!(line.ends_with(" executor=io_uring"), "{line}");
            }
            Some(why) => {
                assert!(!why.is_empty());
                assert_eq!(j["executor"], "threads");
                assert_eq!(j["io_uring_fallback"], why.as_str());
                assert!(line.contains(" io_uring_fallback=\""), "{line}");
            }
        }
    }

    #[test]
    fn json_is_written_atomically_and_parses() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.json");
        write_json(&p, &json!({"a": 1})).unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(v["a"], 1);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
    }

    /// Exports that end together write the file from several threads; every
    /// write must succeed and leave a complete file.
    #[test]
    fn concurrent_writers_do_not_collide() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.json");
        std::thread::scope(|s| {
            for t in 0..4 {
                let p = &p;
                s.spawn(move || {
                    for i in 0..200 {
                        write_json(p, &json!({"t": t, "i": i})).unwrap();
                    }
                });
            }
        });
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(v["i"], 199);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
    }
}

//! `vmstor serve`: a storage daemon serving vmstor disks to a VMM over
//! vhost-user (like `qemu-storage-daemon --export type=vhost-user-blk` or
//! `vhost-device-scsi`). See `docs/serve.md` for the operator's view.
//!
//! ## Architecture
//! ```text
//! main thread: parse (cli) ─ open disks (hostio) ─ bind sockets ─ signal loop
//!    │ one thread per export                          SIGINT/SIGTERM → Server::stop
//!    ▼                                                SIGUSR1 → counters
//! daemon::Server::run ── accept ── VhostUserDaemon ── SIGUSR2 → resume_held
//!        (reconnect loop)            │ one epoll thread per queue
//!                                    ▼
//!                     blk::BlkConn (VhostUserBackend) ── BlockWorker ── Disk
//!                     scsi::ScsiConn (VhostUserBackend) ── ScsiWorker ── ScsiDisk ── Disk
//! ```
//! - [`cli`]: the option table; parsing, `--help` and the docs table.
//! - [`daemon`]: the per-export serving loop (accept, serve, settle and
//!   flush on disconnect, accept again) and graceful stop.
//! - [`blk`]: the vhost-user-blk back end on `vmstor-virtio-blk`.
//! - [`scsi`]: the vhost-user-scsi back end on `vmstor-virtio-scsi`.
//! - [`vring`]: what the back ends share (vring table, interrupt rules).
//! - [`counters`]: per-export counters, printed and written as JSON.
//!
//! ## Exit status
//! 0 after SIGINT/SIGTERM once every export stopped and every disk was
//! flushed; 1 if an export failed or a final flush failed; 2 for a usage
//! error (nothing was opened).

pub(crate) mod blk;
pub(crate) mod cli;
pub(crate) mod counters;
pub(crate) mod daemon;
#[cfg(test)]
mod doctable;
pub(crate) mod scsi;
pub(crate) mod vring;

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};

use serde_json::json;
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::Signals;
use tracing::{error, info, warn};
use vhost::vhost_user::Listener;
use vmstor_hostio::fault::FaultFile;
use vmstor_hostio::probe::probe_path;
use vmstor_hostio::{Disk, DiskOptions, ErrorPolicy, ExecutorKind, Policy, RealFile};
use vmstor_virtio_blk::BlkOptions;

use cli::{DiskSpec, ExportKind, ExportSpec, IoEngine, Parsed, ServeConfig};
use daemon::{Exported, Hook, Server};

/// Opens one disk as `d` says.
pub(crate) fn open_disk(d: &DiskSpec) -> Result<Arc<Disk>, String> {
    let path = d.image.as_deref().ok_or("no image given")?;
    let policy = Policy {
        stable_writes: d.stable_writes,
        discard: d.discard,
        errors: ErrorPolicy {
            read: d.rerror,
            write: d.werror,
        },
        read_only: d.readonly,
        ..Policy::from_mode(d.cache)
    };
    let opts = DiskOptions {
        executor: executor_kind(d),
        trace: false,
        ..Default::default()
    };
    let disk = match d.inject_fault {
        None => Disk::open(path, policy, opts).map_err(|e| e.to_string())?,
        Some((at, kind)) => open_faulty(path, policy, opts, at, kind)?,
    };
    Ok(Arc::new(disk))
}

/// The hostio executor `--io-engine` (and `--io-threads`) ask for.
pub(crate) fn executor_kind(d: &DiskSpec) -> ExecutorKind {
    match d.io_engine {
        IoEngine::IoUring => ExecutorKind::IO_URING,
        IoEngine::Threads => ExecutorKind::Threads(d.io_threads),
    }
}

/// Logs which executor a disk opened for `export` actually runs (and why
/// io_uring fell back to the thread pool, if it did).
fn log_executor(export: &str, lun: Option<usize>, d: &DiskSpec, disk: &Disk) {
    let info = disk.executor_info();
    let lun = lun.map(|l| l as u64);
    match &info.fallback {
        None => info!(
            export,
            lun,
            io_engine = d.io_engine.name(),
            executor = info.active,
            "disk opened"
        ),
        Some(why) => warn!(
            export,
            lun,
            io_engine = d.io_engine.name(),
            executor = info.active,
            io_uring_fallback = %why,
            "disk opened: io_uring unavailable, running the thread pool"
        ),
    }
}

/// The `--x-inject-fault` testing aid: the image behind hostio's fault
/// wrapper.
fn open_faulty(
    path: &Path,
    policy: Policy,
    opts: DiskOptions,
    at: u64,
    kind: vmstor_hostio::crash::FaultKind,
) -> Result<Disk, String> {
    let caps = probe_path(path)
        .map_err(|e| format!("cannot probe {}: {e}", path.display()))?
        .caps;
    let mut flags = libc::O_CLOEXEC;
    if policy.direct {
        flags |= libc::O_DIRECT;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(!policy.read_only)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let inner = Arc::new(RealFile::new(file));
    warn!(op = at, ?kind, "fault injection enabled (testing aid)");
    Disk::from_host_file(
        Arc::new(FaultFile::new(inner, at, kind)),
        caps,
        policy,
        opts,
    )
    .map_err(|e| e.to_string())
}

fn blk_options(e: &ExportSpec) -> BlkOptions {
    BlkOptions {
        num_queues: e.queues,
        queue_size: e.queue_size,
        serial: e.serial.as_bytes().to_vec(),
        ..BlkOptions::default()
    }
}

/// What a signal makes the daemon do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignalAction {
    /// Finish in-flight requests, flush, exit.
    Stop,
    /// Print and write the counters.
    Report,
    /// Retry held requests.
    Resume,
}

/// The signals the daemon handles: drives the signal loop and the table in
/// `docs/serve.md`.
pub(crate) const SIGNALS: &[(i32, &str, SignalAction, &str)] = &[
    (
        SIGINT,
        "SIGINT",
        SignalAction::Stop,
        "stop taking requests, complete the in-flight ones on their rings, fail held ones (IOERR), \
         flush every disk, close the connections, print and write the counters, exit 0 \
         (1 if a final flush failed)",
    ),
    (SIGTERM, "SIGTERM", SignalAction::Stop, "as SIGINT"),
    (
        SIGUSR1,
        "SIGUSR1",
        SignalAction::Report,
        "print one counters line per export on stdout and rewrite the `--counters` file",
    ),
    (
        SIGUSR2,
        "SIGUSR2",
        SignalAction::Resume,
        "retry every request held by `--werror`/`--rerror` `stop` or `enospc` (the operator \
         fixed the cause, e.g. freed space); their completions then reach the guest",
    ),
];

/// Everything the signal loop acts on.
struct Exports {
    list: Vec<Arc<dyn Exported>>,
    counters: Option<std::path::PathBuf>,
}

impl Exports {
    fn json(&self) -> serde_json::Value {
        json!({
            "pid": std::process::id(),
            "exports": self.list.iter().map(|e| e.report()).collect::<Vec<_>>(),
        })
    }

    fn write_counters(&self) {
        if let Some(p) = &self.counters {
            if let Err(e) = counters::write_json(p, &self.json()) {
                error!("cannot write counters to {}: {e}", p.display());
            }
        }
    }

    fn print_counters(&self) {
        for e in &self.list {
            println!("vmstor serve: {}", e.report_line());
        }
    }
}

/// Binds `path`, replacing a stale socket but never anything else: a
/// regular file there (an image given as the socket by mistake) or a
/// socket another process still serves is an error.
fn listen(path: &Path) -> Result<Listener, String> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_socket() {
            return Err(format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(format!("{} is served by another process", path.display()));
        }
    }
    Listener::new(path, true).map_err(|e| format!("cannot listen on {}: {e}", path.display()))
}

/// How a serving thread runs an export on its listener.
type RunFn = Arc<dyn Fn(Listener) -> Result<(), String> + Send + Sync>;

/// One export ready to serve.
struct Built {
    export: Arc<dyn Exported>,
    listener: Listener,
    run: RunFn,
}

/// Opens every disk, binds every socket and builds the servers; nothing
/// is served yet.
fn build(cfg: &ServeConfig, hook: Hook) -> Result<Vec<Built>, String> {
    let mut out = Vec::new();
    for (i, e) in cfg.exports.iter().enumerate() {
        match e.kind {
            ExportKind::Blk => {
                let name = format!("blk{i}");
                let disk = open_disk(&e.disk).map_err(|m| format!("{name}: {m}"))?;
                log_executor(&name, None, &e.disk, &disk);
                let image = e.disk.image.clone().unwrap_or_default();
                let svc = Arc::new(
                    blk::BlkService::new(disk, image, blk_options(e))
                        .map_err(|m| format!("{name}: {m}"))?,
                );
                let listener = listen(&e.socket).map_err(|m| format!("{name}: {m}"))?;
                let server = Arc::new(
                    Server::new(name.clone(), e.kind, e.socket.clone(), svc, hook.clone())
                        .map_err(|m| format!("{name}: {m}"))?,
                );
                let s2 = server.clone();
                out.push(Built {
                    export: server,
                    listener,
                    run: Arc::new(move |l| s2.run(l)),
                });
            }
            ExportKind::Scsi => {
                let name = format!("scsi{i}");
                let mut luns = Vec::new();
                for (l, d) in e.luns.iter().enumerate() {
                    let disk = open_disk(d).map_err(|m| format!("{name} lun {l}: {m}"))?;
                    log_executor(&name, Some(l), d, &disk);
                    luns.push(scsi::Lun {
                        disk,
                        image: d.image.clone().unwrap_or_default(),
                        config: vmstor_scsi::ScsiDiskConfig {
                            serial: format!("VMSTOR-{name}-{l}"),
                            ..Default::default()
                        },
                    });
                }
                let svc = Arc::new(scsi::ScsiService::new(luns, e.queues, e.queue_size));
                let listener = listen(&e.socket).map_err(|m| format!("{name}: {m}"))?;
                let server = Arc::new(
                    Server::new(name.clone(), e.kind, e.socket.clone(), svc, hook.clone())
                        .map_err(|m| format!("{name}: {m}"))?,
                );
                let s2 = server.clone();
                out.push(Built {
                    export: server,
                    listener,
                    run: Arc::new(move |l| s2.run(l)),
                });
            }
        }
    }
    Ok(out)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VMSTOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Runs `vmstor serve` with the arguments after `serve`.
pub fn main(args: &[String]) -> ExitCode {
    let cfg = match cli::parse(args) {
        Ok(Parsed::Help) => {
            print!("{}", cli::help());
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Serve(c)) => c,
        Err(e) => {
            eprintln!("vmstor serve: {e}\nTry `vmstor serve --help`.");
            return ExitCode::from(2);
        }
    };
    init_logging();
    // Signals are routed to this thread's iterator before any other thread
    // exists, so none of them takes the default action.
    let mut signals = match Signals::new(SIGNALS.iter().map(|s| s.0)) {
        Ok(s) => s,
        Err(e) => {
            error!("cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let registry: Arc<OnceLock<Exports>> = Arc::new(OnceLock::new());
    let r2 = registry.clone();
    let hook: Hook = Arc::new(move || {
        if let Some(ex) = r2.get() {
            ex.write_counters();
        }
    });
    let built = match build(&cfg, hook) {
        Ok(b) => b,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(1);
        }
    };
    let exports = Exports {
        list: built.iter().map(|b| b.export.clone()).collect(),
        counters: cfg.counters.clone(),
    };
    let _ = registry.set(exports);
    let exports = registry.get().expect("just set");
    exports.write_counters();

    let failed = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for Built {
        export: ex,
        listener,
        run,
    } in built
    {
        let failed2 = failed.clone();
        let name = ex.name().to_string();
        let t = std::thread::Builder::new()
            .name(format!("serve-{name}"))
            .spawn(move || {
                if let Err(e) = run(listener) {
                    error!(export = %name, "{e}");
                    failed2.store(true, SeqCst);
                    // Bring the whole daemon down like an operator would.
                    let _ = signal_hook::low_level::raise(SIGTERM);
                }
            });
        match t {
            Ok(t) => threads.push(t),
            Err(e) => {
                error!("cannot start a thread: {e}");
                failed.store(true, SeqCst);
                break;
            }
        }
    }

    if !failed.load(SeqCst) {
        for sig in signals.forever() {
            let Some(&(_, name, action, _)) = SIGNALS.iter().find(|s| s.0 == sig) else {
                continue;
            };
            match action {
                SignalAction::Report => {
                    exports.print_counters();
                    exports.write_counters();
                }
                SignalAction::Resume => {
                    for e in &exports.list {
                        let n = e.resume_held();
                        info!(
                            export = e.name(),
                            retried = n,
                            "{name}: held requests retried"
                        );
                    }
                }
                SignalAction::Stop => {
                    info!("{name}: stopping: finishing in-flight requests and flushing");
                    break;
                }
            }
        }
    }
    for e in &exports.list {
        e.stop();
    }
    for t in threads {
        let _ = t.join();
    }
    let mut ok = !failed.load(SeqCst);
    for e in &exports.list {
        if let Err(m) = e.flush() {
            error!(export = e.name(), "final flush failed: {m}");
            ok = false;
        }
    }
    exports.print_counters();
    exports.write_counters();
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

//! `vmstor-qemu-proxy`: the remote side of QEMU's `x-pci-proxy-dev`
//! (experimental, as QEMU marks the protocol), and a launcher that starts
//! QEMU and the remote on one socket pair.
//!
//! ```text
//! vmstor-qemu-proxy launch --proxy device=KIND[,addr=SLOT][,id=ID][,doorbell=SOCK][,image=PATH][,log=FILE][,verbose] \
//!                          [--proxy ...] -- QEMU ARGS...
//! vmstor-qemu-proxy remote --fd N [--device KIND] [--doorbell SOCK] [--image PATH] [--verbose]
//! ```
//! Devices: `testdev` (see `vmstor_qemu_proxy::testdev`) and `ide`
//! (`vmstor_qemu_proxy::ide`: vmstor's IDE controller with one disk).

use std::ffi::OsString;
use std::os::fd::FromRawFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use vmstor_hostio::CacheMode;
use vmstor_qemu_proxy::ide::IdeFunction;
use vmstor_qemu_proxy::irq::{Doorbell, IrqLine};
use vmstor_qemu_proxy::launch::{launch, LaunchSpec, ProxySpec};
use vmstor_qemu_proxy::pci::PciFunction;
use vmstor_qemu_proxy::server::{serve, Remote};
use vmstor_qemu_proxy::testdev::TestDevice;

#[derive(Parser, Debug)]
#[command(
    name = "vmstor-qemu-proxy",
    about = "Remote PCI function for QEMU's x-pci-proxy-dev (experimental)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DeviceKind {
    /// The test function (MMIO + I/O BARs, DMA, INTx).
    Testdev,
    /// vmstor's IDE controller (native-mode PIIX3, `ata_piix`) with one disk: needs an image.
    Ide,
}

impl DeviceKind {
    fn name(self) -> &'static str {
        match self {
            DeviceKind::Testdev => "testdev",
            DeviceKind::Ide => "ide",
        }
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Serve one PCI function on an inherited socket.
    Remote {
        /// The inherited socket descriptor (QEMU's other end: `x-pci-proxy-dev,fd=`).
        #[arg(long)]
        fd: i32,
        /// The device to present.
        #[arg(long, value_enum, default_value = "testdev")]
        device: DeviceKind,
        /// Chardev socket of a `pci-serial` sharing the proxy's interrupt line:
        /// one byte per rising INTx edge (the TCG interrupt workaround).
        #[arg(long)]
        doorbell: Option<PathBuf>,
        /// Disk image, for functions that have a disk (not `testdev`).
        #[arg(long)]
        image: Option<PathBuf>,
        /// Host cache mode of the disk: writeback, none, writethrough, directsync, unsafe.
        #[arg(long, default_value = "writeback")]
        cache: CacheMode,
        /// Write the disk's host-I/O counters here (key=value lines) when the proxy disconnects.
        #[arg(long)]
        counters: Option<PathBuf>,
        /// Record every host operation and add their counts to --counters (memory grows with
        /// the I/O done: for tests).
        #[arg(long)]
        trace: bool,
        /// Log every message on stderr.
        #[arg(long)]
        verbose: bool,
    },
    /// Start QEMU and one remote per `--proxy`, each pair on its own socket
    /// pair; exits with QEMU's status (125 if the launch failed or a remote died).
    Launch {
        /// A proxied function: `device=KIND[,addr=SLOT][,id=ID][,doorbell=SOCK]`
        /// `[,image=PATH][,cache=MODE][,counters=FILE][,trace][,log=FILE][,verbose]`.
        #[arg(long = "proxy", required = true, value_parser = parse_proxy)]
        proxies: Vec<ProxyArg>,
        /// QEMU's command line.
        #[arg(last = true, required = true)]
        qemu: Vec<OsString>,
    },
}

#[derive(Clone, Debug)]
struct ProxyArg {
    device: DeviceKind,
    addr: Option<String>,
    id: Option<String>,
    doorbell: Option<PathBuf>,
    log: Option<PathBuf>,
    image: Option<PathBuf>,
    cache: Option<String>,
    counters: Option<PathBuf>,
    trace: bool,
    verbose: bool,
}

fn parse_proxy(s: &str) -> Result<ProxyArg, String> {
    let mut p = ProxyArg {
        device: DeviceKind::Testdev,
        addr: None,
        id: None,
        doorbell: None,
        log: None,
        image: None,
        cache: None,
        counters: None,
        trace: false,
        verbose: false,
    };
    let mut have_device = false;
    for item in s.split(',') {
        let (k, v) = item.split_once('=').unwrap_or((item, ""));
        match k {
            "device" => {
                p.device = DeviceKind::from_str(v, false)?;
                have_device = true;
            }
            "addr" => p.addr = Some(v.to_string()),
            "id" => p.id = Some(v.to_string()),
            "doorbell" => p.doorbell = Some(v.into()),
            "log" => p.log = Some(v.into()),
            "image" => p.image = Some(v.into()),
            "cache" => p.cache = Some(v.to_string()),
            "counters" => p.counters = Some(v.into()),
            "trace" => p.trace = true,
            "verbose" => p.verbose = true,
            _ => return Err(format!("unknown proxy option '{k}'")),
        }
    }
    if !have_device {
        return Err("device= is required".into());
    }
    Ok(p)
}

/// Messages kept for the post-mortem dump (printed when the connection fails, or always with
/// `VMSTOR_PROXY_HISTORY` set).
const HISTORY: usize = 400;

/// Serves `dev` on the inherited socket `fd`; `report` renders the function's
/// counters for `--counters`.
fn serve_fd<F: PciFunction>(
    fd: i32,
    dev: F,
    doorbell: Option<PathBuf>,
    verbose: bool,
    counters: Option<PathBuf>,
    report: impl Fn(&F) -> String,
) -> ExitCode {
    // Take ownership of the inherited descriptor only if it is a socket.
    let is_socket = fd >= 0
        && std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .map(|m| m.file_type().is_socket())
            .unwrap_or(false);
    if !is_socket {
        eprintln!("qemu-proxy: --fd {fd} is not an open socket");
        return ExitCode::from(2);
    }
    // SAFETY: `fd` is an open socket (checked above) that the launcher handed
    // to this process for its exclusive use; nothing else in the process owns it.
    let sock = unsafe { UnixStream::from_raw_fd(fd) };
    let irq = IrqLine::new();
    if let Some(p) = doorbell {
        irq.set_doorbell(Doorbell::new(p));
    }
    let mut remote = Remote::new(dev, irq);
    remote.set_verbose(verbose);
    remote.set_history(HISTORY);
    let r = serve(&mut remote, sock);
    let s = remote.stats();
    eprintln!(
        "qemu-proxy: stats: sync_sysmem={} (changes={} errors={}) cfg_reads={} cfg_writes={} bar_reads={} \
         bar_writes={} unclaimed={} set_irqfd={} resets={} resamples={} irq_edges={} kick_failures={}",
        s.sync_sysmem,
        s.sysmem_changes,
        s.sysmem_errors,
        s.cfg_reads,
        s.cfg_writes,
        s.bar_reads,
        s.bar_writes,
        s.bar_unclaimed,
        s.set_irqfd,
        s.resets,
        s.resamples,
        remote.irq().edges(),
        remote.irq().kick_failures()
    );
    if r.is_err() || std::env::var_os("VMSTOR_PROXY_HISTORY").is_some() {
        eprintln!("qemu-proxy: last {HISTORY} messages, oldest first:");
        for e in remote.history() {
            eprintln!("qemu-proxy:   {:x?} {:#x}", e.msg, e.value);
        }
    }
    let text = report(remote.device());
    if !text.is_empty() {
        eprintln!("qemu-proxy: disk counters: {}", text.replace('\n', " "));
    }
    if let Some(path) = counters {
        if let Err(e) = std::fs::write(&path, &text) {
            eprintln!("qemu-proxy: writing {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    match r {
        Ok(_) => {
            eprintln!("qemu-proxy: the proxy closed the connection");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("qemu-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The counters of an IDE disk as `key=value` lines.
fn ide_counters(f: &IdeFunction) -> String {
    let c = f.counters();
    let h = f.host_ops();
    let errors: u64 = c.errors.values().sum();
    format!(
        "reads={}\nwrites={}\nfua_writes={}\nflushes_asked={}\nfdatasyncs={}\nflushes_elided={}\n\
         bytes_read={}\nbytes_written={}\nbytes_bounced={}\nheld={}\nerrors={}\n\
         traced_dsync_writes={}\ntraced_writes={}\ntraced_fdatasyncs={}\n",
        c.reads,
        c.writes,
        c.fua_writes,
        c.flushes_asked,
        c.fdatasyncs,
        c.flushes_elided,
        c.bytes_read,
        c.bytes_written,
        c.bytes_bounced,
        c.held,
        errors,
        h.dsync_writes,
        h.writes,
        h.fdatasyncs
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Remote {
            fd,
            device,
            doorbell,
            image,
            cache,
            counters,
            trace,
            verbose,
        } => match (device, image) {
            (DeviceKind::Testdev, None) => {
                serve_fd(fd, TestDevice::new(), doorbell, verbose, counters, |_| {
                    String::new()
                })
            }
            (DeviceKind::Testdev, Some(_)) => {
                eprintln!("qemu-proxy: the test function takes no --image");
                ExitCode::from(2)
            }
            (DeviceKind::Ide, None) => {
                eprintln!("qemu-proxy: --device ide needs --image");
                ExitCode::from(2)
            }
            (DeviceKind::Ide, Some(img)) => match IdeFunction::open(&img, cache, trace) {
                Ok(dev) => serve_fd(fd, dev, doorbell, verbose, counters, ide_counters),
                Err(e) => {
                    eprintln!("qemu-proxy: {e}");
                    ExitCode::FAILURE
                }
            },
        },
        Cmd::Launch { proxies, qemu } => {
            let exe = match std::env::current_exe() {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("qemu-proxy: own path: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let proxies = proxies
                .into_iter()
                .enumerate()
                .map(|(i, p)| {
                    let mut remote: Vec<OsString> =
                        vec![exe.clone().into(), "remote".into(), "--device".into()];
                    remote.push(p.device.name().into());
                    if let Some(d) = p.doorbell {
                        remote.push("--doorbell".into());
                        remote.push(d.into());
                    }
                    if let Some(i) = p.image {
                        remote.push("--image".into());
                        remote.push(i.into());
                    }
                    if let Some(c) = p.cache {
                        remote.push("--cache".into());
                        remote.push(c.into());
                    }
                    if let Some(c) = p.counters {
                        remote.push("--counters".into());
                        remote.push(c.into());
                    }
                    if p.trace {
                        remote.push("--trace".into());
                    }
                    if p.verbose {
                        remote.push("--verbose".into());
                    }
                    ProxySpec {
                        remote,
                        device_id: p.id.unwrap_or_else(|| format!("vmstor-proxy{i}")),
                        addr: p.addr,
                        remote_log: p.log,
                    }
                })
                .collect();
            match launch(&LaunchSpec { qemu, proxies }) {
                Ok(status) => {
                    use std::os::unix::process::ExitStatusExt;
                    let code = status
                        .code()
                        .or_else(|| status.signal().map(|s| 128 + s))
                        .unwrap_or(1);
                    ExitCode::from(code.clamp(0, 255) as u8)
                }
                Err(e) => {
                    eprintln!("qemu-proxy launch: {e}");
                    ExitCode::from(125)
                }
            }
        }
    }
}

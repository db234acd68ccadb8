//! `vmstor-qemu-proxy`: the remote side of QEMU's `x-pci-proxy-dev`
//! (experimental, as QEMU marks the protocol), and a launcher that starts
//! QEMU and the remote on one socket pair.
//!
//! ```text
//! vmstor-qemu-proxy launch [--device testdev] [--doorbell SOCK] [--addr SLOT] [--log FILE] -- QEMU ARGS...
//! vmstor-qemu-proxy remote --fd N [--device testdev] [--doorbell SOCK] [--verbose]
//! ```
//! Devices: `testdev` (see `vmstor_qemu_proxy::testdev`). The IDE controller
//! (`crates/ata`) plugs in through the same `PciFunction` trait; it is not
//! wired here yet.

use std::ffi::OsString;
use std::os::fd::FromRawFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use vmstor_qemu_proxy::irq::{Doorbell, IrqLine};
use vmstor_qemu_proxy::launch::{launch, LaunchSpec};
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
        /// Log every message on stderr.
        #[arg(long)]
        verbose: bool,
    },
    /// Start the remote and QEMU on one socket pair; exits with QEMU's status.
    Launch {
        /// The device to present.
        #[arg(long, value_enum, default_value = "testdev")]
        device: DeviceKind,
        /// Doorbell chardev socket (see `remote`).
        #[arg(long)]
        doorbell: Option<PathBuf>,
        /// PCI slot of the proxy device (`addr=`).
        #[arg(long)]
        addr: Option<String>,
        /// `id=` of the proxy device.
        #[arg(long, default_value = "vmstor-proxy0")]
        id: String,
        /// The remote's log file.
        #[arg(long)]
        log: Option<PathBuf>,
        /// Log every message.
        #[arg(long)]
        verbose: bool,
        /// QEMU's command line.
        #[arg(last = true, required = true)]
        qemu: Vec<OsString>,
    },
}

fn remote_main(fd: i32, device: DeviceKind, doorbell: Option<PathBuf>, verbose: bool) -> ExitCode {
    // Take ownership of the inherited descriptor only if it is a socket.
    let is_socket = std::fs::read_link(format!("/proc/self/fd/{fd}")).is_ok()
        && std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .map(|m| m.file_type().is_socket())
            .unwrap_or(false);
    if fd < 0 || !is_socket {
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
    let dev = match device {
        DeviceKind::Testdev => TestDevice::new(),
    };
    let mut remote = Remote::new(dev, irq);
    remote.set_verbose(verbose);
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Remote {
            fd,
            device,
            doorbell,
            verbose,
        } => remote_main(fd, device, doorbell, verbose),
        Cmd::Launch {
            device,
            doorbell,
            addr,
            id,
            log,
            verbose,
            qemu,
        } => {
            let exe = match std::env::current_exe() {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("qemu-proxy: own path: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let mut remote: Vec<OsString> = vec![exe.into(), "remote".into(), "--device".into()];
            remote.push(
                match device {
                    DeviceKind::Testdev => "testdev",
                }
                .into(),
            );
            if let Some(d) = doorbell {
                remote.push("--doorbell".into());
                remote.push(d.into());
            }
            if verbose {
                remote.push("--verbose".into());
            }
            let spec = LaunchSpec {
                qemu,
                remote,
                device_id: id,
                addr,
                remote_log: log,
            };
            match launch(&spec) {
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

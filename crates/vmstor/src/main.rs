//! `vmstor`: the demo, the host checker, the command tracer and the crash
//! checker for vmstor's emulated storage controllers.
//!
//! Exit status: 0 success, 1 failure (a check failed, an I/O error, a script
//! line a controller cannot express), 2 usage error.

mod run;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vmstor_hostio::crash::SimHost;
use vmstor_hostio::{CacheMode, Sabotage, StableWrites};

use vmstor::controllers::Controller;

#[derive(Parser)]
#[command(
    name = "vmstor",
    version,
    about = "Emulated IDE, SCSI and virtio-blk disks that tell the guest the truth about caching",
    long_about = "vmstor runs guest workloads through its emulated storage controllers and shows \
                  what each guest command becomes on the host.\n\nStart with `vmstor demo`."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a journaling workload through every controller in every cache mode
    /// and print what it became on the host, with a crash-model verdict.
    Demo {
        /// Use this image file (it is overwritten) instead of a temporary one.
        #[arg(long)]
        image: Option<PathBuf>,
        /// Only these controllers (ide, scsi, virtio-blk, engine); repeatable.
        #[arg(long = "controller", value_parser = parse_controller)]
        controllers: Vec<Controller>,
        /// Only these cache modes (writeback, none, writethrough, directsync, unsafe); repeatable.
        #[arg(long = "cache", value_parser = parse_cache)]
        caches: Vec<CacheMode>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Report what the host under an image file or block device can do, and
    /// which cache mode and stable-writes setting to use there.
    Probe {
        /// Image file or block device.
        path: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a script of guest-level lines through one controller and print, per
    /// line, the controller commands sent, the guest-visible status and the
    /// host operations they became.
    #[command(
        after_help = "Script lines (# starts a comment):\n  write LBA COUNT [fua]\n  read LBA COUNT\n  flush\n  wce on|off\n  discard LBA COUNT\n  zero LBA COUNT [unmap]\n  reset"
    )]
    Trace {
        /// Controller: ide, scsi, virtio-blk or engine.
        #[arg(long, value_parser = parse_controller)]
        controller: Controller,
        /// Cache mode: writeback, none, writethrough, directsync or unsafe.
        #[arg(long, value_parser = parse_cache)]
        cache: CacheMode,
        /// Stable-writes handling for O_DIRECT writes: auto, bounce or trust.
        #[arg(long, default_value = "auto", value_parser = parse_stable)]
        stable_writes: StableWrites,
        /// Use this image (it is written to) instead of a temporary one.
        #[arg(long)]
        image: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Script file, or - for standard input (the default).
        #[arg(default_value = "-")]
        script: String,
    },
    /// Run the crash-model property check: random guest command sequences,
    /// a crash at every host-op boundary, every image checked against what
    /// the guest was promised.
    Crashcheck {
        /// Only these controllers; repeatable.
        #[arg(long = "controller", value_parser = parse_controller)]
        controllers: Vec<Controller>,
        /// Only these cache modes; repeatable.
        #[arg(long = "cache", value_parser = parse_cache)]
        caches: Vec<CacheMode>,
        /// Sequences per controller and cache mode.
        #[arg(long, default_value_t = 100)]
        cases: u64,
        /// First random seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Guest operations per sequence.
        #[arg(long, default_value_t = 24)]
        len: usize,
        /// The simulated host's capabilities: full, no-rwf-dsync (FUA as
        /// write + fdatasync), align-4k (O_DIRECT read-modify-write),
        /// no-fast-zero (zero writes instead of fallocate).
        #[arg(long, default_value = "full", value_parser = parse_host)]
        host: SimHost,
        /// Switch on a known-bad behaviour to see the check fail (testing
        /// the checker): skip-flush-when-direct, wce-off-not-fua, no-latch,
        /// share-running-sync; repeatable.
        #[arg(long, hide = true, value_parser = parse_sabotage)]
        sabotage: Vec<Sabotage>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve disks to a VMM over vhost-user (vhost-user-blk, vhost-user-scsi):
    /// a storage daemon. See `vmstor serve --help`.
    #[command(disable_help_flag = true)]
    Serve {
        /// Exports and their options (`vmstor serve --help` lists them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn parse_controller(s: &str) -> Result<Controller, String> {
    s.parse()
}

fn parse_cache(s: &str) -> Result<CacheMode, String> {
    s.parse()
        .map_err(|e: vmstor_hostio::PolicyParseError| e.to_string())
}

fn parse_stable(s: &str) -> Result<StableWrites, String> {
    s.parse()
        .map_err(|e: vmstor_hostio::PolicyParseError| e.to_string())
}

fn parse_host(s: &str) -> Result<SimHost, String> {
    SimHost::ALL
        .into_iter()
        .find(|h| h.to_string() == s)
        .ok_or_else(|| {
            let names: Vec<String> = SimHost::ALL.iter().map(|h| h.to_string()).collect();
            format!("unknown host '{s}'; accepted: {}", names.join(", "))
        })
}

fn parse_sabotage(s: &str) -> Result<Sabotage, String> {
    let mut b = Sabotage::default();
    match s {
        "skip-flush-when-direct" => b.skip_flush_when_direct = true,
        "wce-off-not-fua" => b.wce_off_not_fua = true,
        "no-latch" => b.no_latch = true,
        "share-running-sync" => b.share_running_sync = true,
        _ => {
            return Err(format!(
                "unknown sabotage '{s}'; accepted: skip-flush-when-direct, wce-off-not-fua, \
                 no-latch, share-running-sync"
            ))
        }
    }
    Ok(b)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Serve { args } => return serve::main(&args),
        Cmd::Demo {
            image,
            controllers,
            caches,
            json,
        } => run::demo(image, controllers, caches, json),
        Cmd::Probe { path, json } => run::probe(&path, json),
        Cmd::Trace {
            controller,
            cache,
            stable_writes,
            image,
            json,
            script,
        } => run::trace(controller, cache, stable_writes, image, json, &script),
        Cmd::Crashcheck {
            controllers,
            caches,
            cases,
            seed,
            len,
            host,
            sabotage,
            json,
        } => {
            let sabotage = sabotage
                .into_iter()
                .fold(Sabotage::default(), |a, b| Sabotage {
                    skip_flush_when_direct: a.skip_flush_when_direct || b.skip_flush_when_direct,
                    wce_off_not_fua: a.wce_off_not_fua || b.wce_off_not_fua,
                    no_latch: a.no_latch || b.no_latch,
                    share_running_sync: a.share_running_sync || b.share_running_sync,
                });
            let check = run::CheckOptions {
                cases,
                seed,
                len,
                host,
                sabotage,
            };
            run::crashcheck(controllers, caches, check, json)
        }
    };
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("vmstor: {e}");
            ExitCode::from(1)
        }
    }
}

//! The `vmstor serve` command line. One table, [`OPTIONS`], drives parsing,
//! `vmstor serve --help` and the options table in `docs/serve.md` (a test
//! checks the document against it).
//!
//! Grammar: options that start an export (`--vhost-user-blk SOCKET`,
//! `--vhost-user-scsi SOCKET`) open a group; the export options after it
//! (up to the next export) configure that export. Global options may appear
//! anywhere. SCSI LUNs carry their disk options inline:
//! `--lun PATH[,cache=MODE][,readonly][,...]`. Values are given as
//! `--name VALUE` or `--name=VALUE`.
//!
//! Contract: [`parse`] never panics and names the offending option in its
//! error; every value is checked here (ranges, enums, lengths) so that the
//! daemon starts only with a configuration the device crates accept.

use std::path::PathBuf;

use vmstor_hostio::crash::FaultKind;
use vmstor_hostio::{CacheMode, DiscardMode, ErrorAction, StableWrites};

/// Where an option may appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Anywhere on the command line.
    Global,
    /// Starts a new export.
    Export,
    /// After `--vhost-user-blk` or `--vhost-user-scsi`.
    AnyExport,
    /// After `--vhost-user-blk` only.
    Blk,
    /// After `--vhost-user-scsi` only.
    Scsi,
    /// A disk option: `--NAME VALUE` after `--vhost-user-blk`, or
    /// `NAME=VALUE` inside `--lun`.
    Disk,
}

impl Scope {
    /// How the scope is written in the docs and `--help`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Scope::Global => "global",
            Scope::Export => "starts an export",
            Scope::AnyExport => "blk, scsi",
            Scope::Blk => "blk",
            Scope::Scsi => "scsi",
            Scope::Disk => "blk, scsi `--lun` suboption",
        }
    }
}

/// One disk's settings (the `--vhost-user-blk` image or a SCSI LUN).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DiskSpec {
    /// Image file or block device.
    pub image: Option<PathBuf>,
    /// Cache-mode preset.
    pub cache: CacheMode,
    /// Stable-write handling for `O_DIRECT` writes.
    pub stable_writes: StableWrites,
    /// Discard handling.
    pub discard: DiscardMode,
    /// Write error action.
    pub werror: ErrorAction,
    /// Read error action.
    pub rerror: ErrorAction,
    /// Refuse modifications.
    pub readonly: bool,
    /// Which hostio executor runs this disk's host I/O.
    pub io_engine: IoEngine,
    /// hostio worker threads (the `threads` engine).
    pub io_threads: usize,
    /// Testing aid: fail host op number N with this fault.
    pub inject_fault: Option<(u64, FaultKind)>,
}

impl Default for DiskSpec {
    fn default() -> Self {
        DiskSpec {
            image: None,
            cache: CacheMode::Writeback,
            stable_writes: StableWrites::Auto,
            discard: DiscardMode::Ignore,
            werror: ErrorAction::Enospc,
            rerror: ErrorAction::Report,
            readonly: false,
            io_engine: IoEngine::IoUring,
            io_threads: 4,
            inject_fault: None,
        }
    }
}

/// The `--io-engine` choice: which hostio executor runs a disk's host I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IoEngine {
    /// hostio's io_uring executor (`ExecutorKind::IO_URING`); hostio falls
    /// back to its thread pool by itself when the kernel refuses io_uring.
    IoUring,
    /// hostio's thread pool with `--io-threads` workers.
    Threads,
}

impl IoEngine {
    /// The name on the command line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            IoEngine::IoUring => "io_uring",
            IoEngine::Threads => "threads",
        }
    }
}

impl std::str::FromStr for IoEngine {
    type Err = String;

    fn from_str(s: &str) -> Result<IoEngine, String> {
        match s {
            "io_uring" => Ok(IoEngine::IoUring),
            "threads" => Ok(IoEngine::Threads),
            _ => Err(format!("expected io_uring or threads, got {s:?}")),
        }
    }
}

/// What kind of export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExportKind {
    /// vhost-user-blk.
    Blk,
    /// vhost-user-scsi.
    Scsi,
}

impl ExportKind {
    /// The protocol name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ExportKind::Blk => "vhost-user-blk",
            ExportKind::Scsi => "vhost-user-scsi",
        }
    }
}

/// One export: a socket and what it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExportSpec {
    /// Protocol.
    pub kind: ExportKind,
    /// The UNIX socket the daemon listens on.
    pub socket: PathBuf,
    /// Request queues.
    pub queues: u16,
    /// Maximum queue size.
    pub queue_size: u16,
    /// virtio-blk serial (GET_ID).
    pub serial: String,
    /// vhost-user-blk: the disk (its `image` is required).
    pub disk: DiskSpec,
    /// vhost-user-scsi: the LUNs, LUN 0 first.
    pub luns: Vec<DiskSpec>,
}

impl ExportSpec {
    fn new(kind: ExportKind, socket: PathBuf) -> ExportSpec {
        ExportSpec {
            kind,
            socket,
            queues: 1,
            queue_size: 1024,
            serial: String::new(),
            disk: DiskSpec::default(),
            luns: Vec::new(),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct ServeConfig {
    /// Exports in command-line order.
    pub exports: Vec<ExportSpec>,
    /// Counters file (JSON), written on SIGUSR1, on disconnects and on exit.
    pub counters: Option<PathBuf>,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// Print the help text.
    Help,
    /// Serve.
    Serve(ServeConfig),
}

type DiskSetter = fn(&mut DiskSpec, &str) -> Result<(), String>;
type ExportSetter = fn(&mut ExportSpec, &str) -> Result<(), String>;
type GlobalSetter = fn(&mut ServeConfig, &str) -> Result<(), String>;

/// How an option takes effect.
#[derive(Clone, Copy)]
pub(crate) enum Apply {
    /// Sets a global.
    Global(GlobalSetter),
    /// Starts an export of this kind.
    Start(ExportKind),
    /// Sets an export field.
    Export(ExportSetter),
    /// Sets a disk field.
    Disk(DiskSetter),
    /// Adds a SCSI LUN.
    Lun,
    /// Prints help.
    Help,
}

/// One row of [`OPTIONS`].
#[derive(Clone, Copy)]
pub(crate) struct OptSpec {
    /// Name without the leading `--`.
    pub name: &'static str,
    /// Value placeholder; empty for a flag.
    pub value: &'static str,
    /// Where it may appear.
    pub scope: Scope,
    /// Default, as written in the docs.
    pub default: &'static str,
    /// One-line description.
    pub help: &'static str,
    /// What it does.
    pub apply: Apply,
}

fn parse_enum<T: std::str::FromStr>(v: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    v.parse::<T>().map_err(|e| e.to_string())
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "" | "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(format!("expected on or off, got {v:?}")),
    }
}

fn parse_num<T>(v: &str, lo: T, hi: T) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let n: T = v
        .parse()
        .map_err(|_| format!("expected a number, got {v:?}"))?;
    if n < lo || n > hi {
        return Err(format!("must be {lo}..={hi}, got {n}"));
    }
    Ok(n)
}

fn parse_fault(v: &str) -> Result<(u64, FaultKind), String> {
    let (n, k) = v
        .split_once(':')
        .ok_or_else(|| format!("expected OP:KIND, got {v:?}"))?;
    let n = parse_num(n, 1u64, u64::MAX)?;
    let k = match k {
        "eio" => FaultKind::Eio,
        "enospc" => FaultKind::Enospc,
        "eintr" => FaultKind::Eintr,
        "short" => FaultKind::Short,
        _ => {
            return Err(format!(
                "fault kind must be eio, enospc, eintr or short, got {k:?}"
            ))
        }
    };
    Ok((n, k))
}

/// Every option. Order is the order of `--help` and the docs table.
pub(crate) const OPTIONS: &[OptSpec] = &[
    OptSpec {
        name: "vhost-user-blk",
        value: "SOCKET",
        scope: Scope::Export,
        default: "",
        help: "serve a virtio-blk disk on this UNIX socket (vhost-user server side)",
        apply: Apply::Start(ExportKind::Blk),
    },
    OptSpec {
        name: "vhost-user-scsi",
        value: "SOCKET",
        scope: Scope::Export,
        default: "",
        help: "serve a virtio-scsi target with the following --lun disks on this UNIX socket",
        apply: Apply::Start(ExportKind::Scsi),
    },
    OptSpec {
        name: "image",
        value: "PATH",
        scope: Scope::Blk,
        default: "(required)",
        help: "image file or block device behind the vhost-user-blk export",
        apply: Apply::Disk(|d, v| {
            if v.is_empty() {
                return Err("must not be empty".into());
            }
            d.image = Some(PathBuf::from(v));
            Ok(())
        }),
    },
    OptSpec {
        name: "lun",
        value: "PATH[,OPT=VALUE...]",
        scope: Scope::Scsi,
        default: "",
        help: "add a LUN (0, 1, ... in order); OPT is any disk option below, e.g. cache=none,readonly",
        apply: Apply::Lun,
    },
    OptSpec {
        name: "cache",
        value: "MODE",
        scope: Scope::Disk,
        default: "writeback",
        help: "cache preset: writeback, none, writethrough, directsync or unsafe (as QEMU's -drive cache=)",
        apply: Apply::Disk(|d, v| {
            d.cache = parse_enum(v)?;
            Ok(())
        }),
    },
    OptSpec {
        name: "stable-writes",
        value: "auto|bounce|trust",
        scope: Scope::Disk,
        default: "auto",
        help: "O_DIRECT writes from guest memory: bounce when the host needs stable pages (auto), always, or never",
        apply: Apply::Disk(|d, v| {
            d.stable_writes = parse_enum(v)?;
            Ok(())
        }),
    },
    OptSpec {
        name: "discard",
        value: "ignore|unmap",
        scope: Scope::Disk,
        default: "ignore",
        help: "whether guest discards punch holes in the image",
        apply: Apply::Disk(|d, v| {
            d.discard = parse_enum(v)?;
            Ok(())
        }),
    },
    OptSpec {
        name: "werror",
        value: "report|stop|enospc",
        scope: Scope::Disk,
        default: "enospc",
        help: "failed writes/flushes: tell the guest, or hold the request until SIGUSR2 (stop: always; enospc: only ENOSPC)",
        apply: Apply::Disk(|d, v| {
            d.werror = parse_enum(v)?;
            Ok(())
        }),
    },
    OptSpec {
        name: "rerror",
        value: "report|stop|enospc",
        scope: Scope::Disk,
        default: "report",
        help: "failed reads: as --werror",
        apply: Apply::Disk(|d, v| {
            d.rerror = parse_enum(v)?;
            Ok(())
        }),
    },
    OptSpec {
        name: "readonly",
        value: "",
        scope: Scope::Disk,
        default: "off",
        help: "open the image read-only and offer a read-only disk",
        apply: Apply::Disk(|d, v| {
            d.readonly = parse_bool(v)?;
            Ok(())
        }),
    },
    OptSpec {
        name: "io-engine",
        value: "io_uring|threads",
        scope: Scope::Disk,
        default: "io_uring",
        help: "how host I/O runs: an io_uring (falls back to a 4-thread pool, logged and counted, when the kernel refuses io_uring) or a thread pool of --io-threads workers",
        apply: Apply::Disk(|d, v| {
            d.io_engine = parse_enum(v)?;
            Ok(())
        }),
    },
    OptSpec {
        name: "io-threads",
        value: "N",
        scope: Scope::Disk,
        default: "4",
        help: "host I/O worker threads for this disk with --io-engine threads (1..=64)",
        apply: Apply::Disk(|d, v| {
            d.io_threads = parse_num(v, 1usize, 64)?;
            Ok(())
        }),
    },
    OptSpec {
        name: "x-inject-fault",
        value: "OP:KIND",
        scope: Scope::Disk,
        default: "",
        help: "testing aid: fail host operation number OP (1-based) with eio, enospc, eintr or short",
        apply: Apply::Disk(|d, v| {
            d.inject_fault = Some(parse_fault(v)?);
            Ok(())
        }),
    },
    OptSpec {
        name: "queues",
        value: "N",
        scope: Scope::AnyExport,
        default: "1",
        help: "request queues offered (1..=64); each is served by its own thread",
        apply: Apply::Export(|e, v| {
            e.queues = parse_num(v, 1u16, 64)?;
            Ok(())
        }),
    },
    OptSpec {
        name: "queue-size",
        value: "N",
        scope: Scope::AnyExport,
        default: "1024",
        help: "largest virtqueue the front end may set up (a power of two, 2..=1024)",
        apply: Apply::Export(|e, v| {
            let n = parse_num(v, 2u16, 1024)?;
            if !n.is_power_of_two() {
                return Err(format!("must be a power of two, got {n}"));
            }
            e.queue_size = n;
            Ok(())
        }),
    },
    OptSpec {
        name: "serial",
        value: "S",
        scope: Scope::Blk,
        default: "(empty)",
        help: "serial number the guest reads with GET_ID (at most 20 bytes)",
        apply: Apply::Export(|e, v| {
            if v.len() > 20 {
                return Err(format!("at most 20 bytes, got {}", v.len()));
            }
            e.serial = v.to_string();
            Ok(())
        }),
    },
    OptSpec {
        name: "counters",
        value: "PATH",
        scope: Scope::Global,
        default: "",
        help: "write per-export counters as JSON here on SIGUSR1, after each disconnect and on exit",
        apply: Apply::Global(|c, v| {
            if v.is_empty() {
                return Err("must not be empty".into());
            }
            c.counters = Some(PathBuf::from(v));
            Ok(())
        }),
    },
    OptSpec {
        name: "help",
        value: "",
        scope: Scope::Global,
        default: "",
        help: "print this help",
        apply: Apply::Help,
    },
];

fn find(name: &str) -> Option<&'static OptSpec> {
    OPTIONS.iter().find(|o| o.name == name)
}

fn in_scope(scope: Scope, cur: Option<ExportKind>) -> bool {
    match scope {
        Scope::Global | Scope::Export => true,
        Scope::AnyExport => cur.is_some(),
        Scope::Blk | Scope::Disk => cur == Some(ExportKind::Blk),
        Scope::Scsi => cur == Some(ExportKind::Scsi),
    }
}

/// Parses one `--lun PATH[,OPT[=VALUE]...]` value.
pub(crate) fn parse_lun(v: &str) -> Result<DiskSpec, String> {
    let mut parts = v.split(',');
    let path = parts.next().unwrap_or_default();
    if path.is_empty() {
        return Err("a LUN needs an image path first".into());
    }
    let mut d = DiskSpec {
        image: Some(PathBuf::from(path)),
        ..DiskSpec::default()
    };
    for p in parts {
        let (k, val) = p.split_once('=').unwrap_or((p, ""));
        let spec = find(k)
            .filter(|o| o.scope == Scope::Disk)
            .ok_or_else(|| format!("unknown LUN option {k:?}"))?;
        if !spec.value.is_empty() && !p.contains('=') {
            return Err(format!("LUN option {k} needs a value ({k}={})", spec.value));
        }
        if let Apply::Disk(set) = spec.apply {
            set(&mut d, val).map_err(|e| format!("LUN option {k}: {e}"))?;
        }
    }
    Ok(d)
}

/// Parses the arguments after `serve`.
pub(crate) fn parse(args: &[String]) -> Result<Parsed, String> {
    let mut cfg = ServeConfig::default();
    let mut cur: Option<ExportSpec> = None;
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        let Some(body) = arg.strip_prefix("--") else {
            return Err(format!(
                "unexpected argument {arg:?} (options start with --)"
            ));
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let spec = find(name).ok_or_else(|| format!("unknown option --{name}"))?;
        if !in_scope(spec.scope, cur.as_ref().map(|e| e.kind)) {
            let hint = match spec.scope {
                Scope::Disk if cur.as_ref().map(|e| e.kind) == Some(ExportKind::Scsi) => {
                    format!("; for a SCSI LUN write --lun PATH,{name}=VALUE")
                }
                _ => String::new(),
            };
            return Err(format!(
                "--{name} is a {} option and must follow {}{hint}",
                spec.scope.label(),
                match spec.scope {
                    Scope::Scsi => "--vhost-user-scsi",
                    Scope::Blk | Scope::Disk => "--vhost-user-blk",
                    _ => "--vhost-user-blk or --vhost-user-scsi",
                }
            ));
        }
        let value = if spec.value.is_empty() {
            inline.unwrap_or_default()
        } else if let Some(v) = inline {
            v
        } else {
            let v = args
                .get(i)
                .ok_or_else(|| format!("--{name} needs a value ({})", spec.value))?;
            i += 1;
            v.clone()
        };
        let err = |e: String| format!("--{name}: {e}");
        match spec.apply {
            Apply::Help => return Ok(Parsed::Help),
            Apply::Global(set) => set(&mut cfg, &value).map_err(err)?,
            Apply::Start(kind) => {
                if value.is_empty() {
                    return Err(err("needs a socket path".into()));
                }
                if let Some(e) = cur.take() {
                    cfg.exports.push(finish(e)?);
                }
                cur = Some(ExportSpec::new(kind, PathBuf::from(value)));
            }
            Apply::Export(set) => set(cur.as_mut().expect("in scope"), &value).map_err(err)?,
            Apply::Disk(set) => {
                set(&mut cur.as_mut().expect("in scope").disk, &value).map_err(err)?
            }
            Apply::Lun => {
                let lun = parse_lun(&value).map_err(err)?;
                cur.as_mut().expect("in scope").luns.push(lun);
            }
        }
    }
    if let Some(e) = cur.take() {
        cfg.exports.push(finish(e)?);
    }
    if cfg.exports.is_empty() {
        return Err(
            "nothing to serve: give --vhost-user-blk SOCKET --image PATH \
                    or --vhost-user-scsi SOCKET --lun PATH"
                .into(),
        );
    }
    let mut sockets: Vec<&PathBuf> = cfg.exports.iter().map(|e| &e.socket).collect();
    sockets.sort();
    if let Some(w) = sockets.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("socket {} is used by two exports", w[0].display()));
    }
    Ok(Parsed::Serve(cfg))
}

fn finish(e: ExportSpec) -> Result<ExportSpec, String> {
    match e.kind {
        ExportKind::Blk if e.disk.image.is_none() => Err(format!(
            "--vhost-user-blk {} needs --image PATH",
            e.socket.display()
        )),
        ExportKind::Scsi if e.luns.is_empty() => Err(format!(
            "--vhost-user-scsi {} needs at least one --lun PATH",
            e.socket.display()
        )),
        ExportKind::Scsi if e.luns.len() > 256 => Err("at most 256 LUNs per export".into()),
        _ => Ok(e),
    }
}

/// The `--help` text, generated from [`OPTIONS`].
pub(crate) fn help() -> String {
    let mut s = String::from(
        "Usage: vmstor serve --vhost-user-blk SOCKET --image PATH [OPTIONS]...\n\
         \x20      vmstor serve --vhost-user-scsi SOCKET --lun PATH[,OPT=VALUE...]... [OPTIONS]...\n\
         \n\
         Serves vmstor disks to a VMM (QEMU, Cloud Hypervisor, crosvm) over vhost-user.\n\
         Several exports may be given; options after an export configure it.\n\
         \n\
         Signals: SIGINT/SIGTERM finish in-flight requests, flush every disk and exit 0;\n\
         SIGUSR1 prints the counters (and writes --counters); SIGUSR2 retries requests\n\
         held by --werror/--rerror stop|enospc.\n\
         Logging: VMSTOR_LOG=info|debug|trace (tracing env-filter syntax).\n\
         \nOptions:\n",
    );
    for o in OPTIONS {
        let left = if o.value.is_empty() {
            format!("--{}", o.name)
        } else {
            format!("--{} {}", o.name, o.value)
        };
        let default = if o.default.is_empty() {
            String::new()
        } else {
            format!(" [default: {}]", o.default)
        };
        s.push_str(&format!(
            "  {left}\n      {} ({}){default}\n",
            o.help,
            o.scope.label()
        ));
    }
    s.push_str("\nCounters (--counters JSON: exports[].FIELD, exports[].disks[].FIELD):\n");
    for (field, meaning) in super::counters::COUNTER_FIELDS {
        s.push_str(&format!("  {field}: {meaning}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn cfg(s: &str) -> ServeConfig {
        match parse(&args(s)) {
            Ok(Parsed::Serve(c)) => c,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn blk_export_with_every_option() {
        let c = cfg(
            "--vhost-user-blk /s --image /i --cache none --stable-writes bounce \
                     --queues 2 --queue-size 128 --serial abc --readonly --discard unmap \
                     --werror stop --rerror enospc --io-engine threads --io-threads 3 \
                     --counters /c",
        );
        assert_eq!(c.counters, Some(PathBuf::from("/c")));
        let e = &c.exports[0];
        assert_eq!((e.kind, e.queues, e.queue_size), (ExportKind::Blk, 2, 128));
        assert_eq!(e.serial, "abc");
        let d = &e.disk;
        assert_eq!(d.image, Some(PathBuf::from("/i")));
        assert_eq!(d.cache, CacheMode::None);
        assert_eq!(d.stable_writes, StableWrites::Bounce);
        assert!(d.readonly);
        assert_eq!(d.discard, DiscardMode::Unmap);
        assert_eq!(
            (d.werror, d.rerror),
            (ErrorAction::Stop, ErrorAction::Enospc)
        );
        assert_eq!(d.io_engine, IoEngine::Threads);
        assert_eq!(d.io_threads, 3);
    }

    #[test]
    fn several_exports_and_luns() {
        let c = cfg(
            "--counters=/c --vhost-user-blk /a --image /i --vhost-user-scsi /b \
                     --lun /l0,cache=none,readonly --lun /l1,werror=stop,readonly=off,io-engine=threads \
                     --queues 4 --vhost-user-blk /d --image=/j",
        );
        assert_eq!(c.exports.len(), 3);
        let s = &c.exports[1];
        assert_eq!((s.kind, s.queues), (ExportKind::Scsi, 4));
        assert_eq!(s.luns[0].cache, CacheMode::None);
        assert!(s.luns[0].readonly);
        assert!(!s.luns[1].readonly);
        assert_eq!(s.luns[1].io_engine, IoEngine::Threads);
        assert_eq!(s.luns[1].werror, ErrorAction::Stop);
        assert_eq!(s.luns[0].io_engine, IoEngine::IoUring);
        assert_eq!(c.exports[2].disk.image, Some(PathBuf::from("/j")));
        // Defaults.
        assert_eq!(
            c.exports[0].disk,
            DiskSpec {
                image: Some("/i".into()),
                ..DiskSpec::default()
            }
        );
    }

    #[test]
    fn errors_name_the_option() {
        for (line, want) in [
            ("", "nothing to serve"),
            ("--image /i", "must follow --vhost-user-blk"),
            ("--vhost-user-blk /s", "needs --image"),
            (
                "--vhost-user-blk /s --image /i --cache fast",
                "--cache: invalid cache mode",
            ),
            (
                "--vhost-user-blk /s --image /i --queues 0",
                "--queues: must be 1..=64",
            ),
            (
                "--vhost-user-blk /s --image /i --queue-size 100",
                "power of two",
            ),
            (
                "--vhost-user-blk /s --image /i --serial 012345678901234567890",
                "at most 20",
            ),
            (
                "--vhost-user-blk /s --image /i --bogus",
                "unknown option --bogus",
            ),
            ("--vhost-user-blk /s --image", "needs a value"),
            ("--vhost-user-scsi /s", "at least one --lun"),
            (
                "--vhost-user-scsi /s --cache none",
                "--lun PATH,cache=VALUE",
            ),
            ("--vhost-user-scsi /s --lun /l,frob=1", "unknown LUN option"),
            (
                "--vhost-user-blk /s --image /i --io-engine aio",
                "--io-engine: expected io_uring or threads",
            ),
            (
                "--vhost-user-scsi /s --lun /l,io-engine=uring",
                "LUN option io-engine: expected io_uring or threads",
            ),
            ("--vhost-user-scsi /s --lun /l,cache", "needs a value"),
            ("--vhost-user-scsi /s --lun ,cache=none", "image path first"),
            (
                "--vhost-user-blk /s --image /i --vhost-user-blk /s --image /j",
                "used by two",
            ),
            ("stray", "unexpected argument"),
            (
                "--vhost-user-blk /s --image /i --x-inject-fault 0:eio",
                "must be 1",
            ),
            (
                "--vhost-user-blk /s --image /i --x-inject-fault 3:boom",
                "fault kind",
            ),
        ] {
            let e = parse(&args(line)).unwrap_err();
            assert!(e.contains(want), "{line:?}: {e}");
        }
        assert_eq!(parse(&args("--vhost-user-blk /s --help")), Ok(Parsed::Help));
    }

    #[test]
    fn help_lists_every_option() {
        let h = help();
        for o in OPTIONS {
            assert!(h.contains(&format!("--{}", o.name)), "{}", o.name);
        }
    }
}

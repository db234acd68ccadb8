//! The mpqemu wire format: what travels on the socket between QEMU's
//! `x-pci-proxy-dev` and the remote process.
//!
//! Every message is a 16-byte [`MsgHeader`] followed by `size` payload bytes,
//! sent in one `sendmsg`; file descriptors ride on it as `SCM_RIGHTS`. All
//! integers are little endian (x86-64 host ABI: the protocol is the layout of
//! QEMU's `MPQemuMsg`, not a portable format). The payload is one of the
//! structs below, chosen by the command ([`COMMANDS`] gives, per command, the
//! payload size and the number of file descriptors a valid message carries,
//! and whether the remote answers it).
//!
//! Contract: [`decode`] accepts exactly what the table allows and rejects
//! anything else with a [`WireError`]; it never panics, whatever the bytes.
//! The peer is QEMU, but lengths, sizes, offsets and counts are treated as
//! untrusted: a header whose `size` exceeds [`MAX_PAYLOAD`] is rejected before
//! any payload is read, so a bad peer cannot make the remote allocate or read
//! without bound.

use thiserror::Error;
use zerocopy::little_endian::{I32, I64, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Size of [`MsgHeader`] on the wire (`offsetof(MPQemuMsg, data)`).
pub const HEADER_SIZE: usize = 16;
/// Largest payload a valid message has (the `MPQemuMsg` data union, whose
/// largest member is [`SyncSysmemMsg`]).
pub const MAX_PAYLOAD: usize = 192;
/// File descriptors a message may carry: QEMU accepts fewer than this many
/// (`REMOTE_MAX_FDS`).
pub const MAX_FDS: usize = 8;
/// Guest RAM regions in one [`SyncSysmemMsg`].
pub const SYSMEM_REGIONS: usize = 8;
/// Size of conventional PCI configuration space: config accesses must stay
/// below it.
pub const PCI_CONFIG_SIZE: u32 = 256;

/// Message header (QEMU `MPQemuMsg` up to `data`): command, 4 bytes of
/// padding, payload size.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MsgHeader {
    /// Command number, see [`Command`].
    pub cmd: I32,
    /// Padding (alignment of `size`); ignored on receive, zero on send.
    pub pad: [u8; 4],
    /// Payload bytes that follow the header.
    pub size: U64,
}

/// `SYNC_SYSMEM` payload (QEMU `SyncSysmemMsg`): the guest RAM layout. Region
/// `i` of the message is `gpas[i]..gpas[i] + sizes[i]`, backed by the `i`-th
/// file descriptor at `offsets[i]`; the message carries one descriptor per
/// region, so the descriptor count says how many entries are used.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SyncSysmemMsg {
    /// Guest-physical start address of each region.
    pub gpas: [U64; SYSMEM_REGIONS],
    /// Length of each region in bytes.
    pub sizes: [U64; SYSMEM_REGIONS],
    /// Offset of each region in its file descriptor (`off_t`).
    pub offsets: [I64; SYSMEM_REGIONS],
}

/// `PCI_CFGREAD` / `PCI_CFGWRITE` payload (QEMU `PciConfDataMsg`): a
/// configuration-space access of `len` bytes at `addr`; `val` is the value
/// written (ignored for reads).
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PciConfDataMsg {
    /// Offset in configuration space.
    pub addr: U32,
    /// Value to write.
    pub val: U32,
    /// Access size in bytes: 1, 2 or 4.
    pub len: I32,
}

/// `BAR_READ` / `BAR_WRITE` payload (QEMU `BarAccessMsg`): an access of
/// `size` bytes at the absolute bus address `addr` (guest-physical address for
/// memory BARs, port number for I/O BARs); the remote decodes it against its
/// own BAR registers.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BarAccessMsg {
    /// Absolute address of the access.
    pub addr: U64,
    /// Value to write (ignored for reads).
    pub val: U64,
    /// Access size in bytes: 1, 2, 4 or 8.
    pub size: U32,
    /// 1: memory space, 0: I/O space.
    pub memory: u8,
    /// Padding.
    pub pad: [u8; 3],
}

/// Commands of the protocol (QEMU `MPQemuCmd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Command {
    /// Guest RAM layout, with the RAM's file descriptors.
    SyncSysmem = 0,
    /// Reply to a synchronous command, carrying a `u64`.
    Ret = 1,
    /// Configuration-space write.
    PciCfgWrite = 2,
    /// Configuration-space read.
    PciCfgRead = 3,
    /// BAR write.
    BarWrite = 4,
    /// BAR read.
    BarRead = 5,
    /// The interrupt eventfds: `[irqfd, resamplefd]`.
    SetIrqfd = 6,
    /// Device (machine) reset.
    DeviceReset = 7,
}

/// How many file descriptors a valid message of a command carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdRule {
    /// None.
    None,
    /// Exactly this many.
    Exactly(usize),
    /// At least one and fewer than [`MAX_FDS`].
    OneToMax,
}

/// One row of the protocol table.
#[derive(Debug, Clone, Copy)]
pub struct CommandSpec {
    /// The command.
    pub cmd: Command,
    /// QEMU's name for it.
    pub name: &'static str,
    /// Who sends it.
    pub direction: Direction,
    /// Payload sizes a valid message has.
    pub payload: &'static [usize],
    /// File descriptors a valid message carries.
    pub fds: FdRule,
    /// Whether the remote answers it with exactly one `RET`.
    pub reply: bool,
}

/// Direction of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// QEMU (the proxy) to the remote.
    ToRemote,
    /// The remote to QEMU.
    ToProxy,
}

/// The protocol, one row per command: drives [`decode`] and the docs.
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        cmd: Command::SyncSysmem,
        name: "SYNC_SYSMEM",
        direction: Direction::ToRemote,
        payload: &[size_of::<SyncSysmemMsg>()],
        fds: FdRule::OneToMax,
        reply: false,
    },
    CommandSpec {
        cmd: Command::Ret,
        name: "RET",
        direction: Direction::ToProxy,
        payload: &[0, 8],
        fds: FdRule::None,
        reply: false,
    },
    CommandSpec {
        cmd: Command::PciCfgWrite,
        name: "PCI_CFGWRITE",
        direction: Direction::ToRemote,
        payload: &[size_of::<PciConfDataMsg>()],
        fds: FdRule::None,
        reply: true,
    },
    CommandSpec {
        cmd: Command::PciCfgRead,
        name: "PCI_CFGREAD",
        direction: Direction::ToRemote,
        payload: &[size_of::<PciConfDataMsg>()],
        fds: FdRule::None,
        reply: true,
    },
    CommandSpec {
        cmd: Command::BarWrite,
        name: "BAR_WRITE",
        direction: Direction::ToRemote,
        payload: &[size_of::<BarAccessMsg>()],
        fds: FdRule::None,
        reply: true,
    },
    CommandSpec {
        cmd: Command::BarRead,
        name: "BAR_READ",
        direction: Direction::ToRemote,
        payload: &[size_of::<BarAccessMsg>()],
        fds: FdRule::None,
        reply: true,
    },
    CommandSpec {
        cmd: Command::SetIrqfd,
        name: "SET_IRQFD",
        direction: Direction::ToRemote,
        payload: &[0],
        fds: FdRule::Exactly(2),
        reply: false,
    },
    CommandSpec {
        cmd: Command::DeviceReset,
        name: "DEVICE_RESET",
        direction: Direction::ToRemote,
        payload: &[0],
        fds: FdRule::None,
        reply: true,
    },
];

impl Command {
    /// The command with this number.
    pub fn from_raw(raw: i32) -> Option<Command> {
        COMMANDS.iter().map(|s| s.cmd).find(|c| *c as i32 == raw)
    }

    /// Its row in [`COMMANDS`].
    pub fn spec(self) -> &'static CommandSpec {
        // Every variant has a row (checked by a unit test).
        COMMANDS
            .iter()
            .find(|s| s.cmd == self)
            .unwrap_or(&COMMANDS[0])
    }
}

/// A malformed message. The stream cannot be trusted after one: the remote
/// drops the connection.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    /// The command number is not in the protocol.
    #[error("unknown command {0}")]
    UnknownCommand(i32),
    /// The header announces more payload than any valid message has.
    #[error("payload size {0} exceeds {MAX_PAYLOAD}")]
    PayloadTooLarge(u64),
    /// The payload size is not the command's.
    #[error("{cmd:?}: payload size {size}, want one of {want:?}")]
    BadPayloadSize {
        /// The command.
        cmd: Command,
        /// The size received.
        size: usize,
        /// The sizes allowed.
        want: &'static [usize],
    },
    /// The file-descriptor count is not the command's.
    #[error("{cmd:?}: {fds} file descriptors, want {want:?}")]
    BadFdCount {
        /// The command.
        cmd: Command,
        /// The count received.
        fds: usize,
        /// The rule.
        want: FdRule,
    },
    /// A message the remote must never receive (`RET`).
    #[error("{0:?} is not sent to the remote")]
    WrongDirection(Command),
    /// A configuration access with a size other than 1, 2 or 4, or past the
    /// end of configuration space.
    #[error("config access of {len} bytes at {addr:#x}")]
    BadConfigAccess {
        /// Offset.
        addr: u32,
        /// Size.
        len: i32,
    },
    /// A BAR access with a size other than 1, 2, 4 or 8, or a memory flag
    /// other than 0 or 1.
    #[error("BAR access of {size} bytes (memory={memory}) at {addr:#x}")]
    BadBarAccess {
        /// Address.
        addr: u64,
        /// Size.
        size: u32,
        /// Memory flag.
        memory: u8,
    },
    /// A guest RAM region that is empty, wraps the guest address space, has a
    /// negative file offset or ends past the largest file offset, or overlaps
    /// another.
    #[error("SYNC_SYSMEM region {index}: gpa {gpa:#x} size {size:#x} offset {offset}")]
    BadRegion {
        /// Region index.
        index: usize,
        /// Guest-physical address.
        gpa: u64,
        /// Size.
        size: u64,
        /// File offset.
        offset: i64,
    },
}

/// One guest RAM region of a `SYNC_SYSMEM` (its file descriptor is the one at
/// the same index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RegionDesc {
    /// Guest-physical start.
    pub gpa: u64,
    /// Length in bytes (non-zero).
    pub size: u64,
    /// Offset in the file descriptor (non-negative).
    pub offset: u64,
}

/// Address space of a BAR access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Space {
    /// I/O ports.
    Io,
    /// Memory.
    Memory,
}

/// A decoded, validated message to the remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// New guest RAM layout; region `i` uses file descriptor `i`.
    SyncSysmem(Vec<RegionDesc>),
    /// Configuration write of `len` bytes (1, 2, 4) at `addr`, with
    /// `addr + len <= 256`.
    CfgWrite {
        /// Offset.
        addr: u16,
        /// Size.
        len: u8,
        /// Value.
        val: u32,
    },
    /// Configuration read, same bounds as `CfgWrite`.
    CfgRead {
        /// Offset.
        addr: u16,
        /// Size.
        len: u8,
    },
    /// BAR write of `size` bytes (1, 2, 4, 8).
    BarWrite {
        /// Address space.
        space: Space,
        /// Absolute address.
        addr: u64,
        /// Size.
        size: u8,
        /// Value.
        val: u64,
    },
    /// BAR read of `size` bytes (1, 2, 4, 8).
    BarRead {
        /// Address space.
        space: Space,
        /// Absolute address.
        addr: u64,
        /// Size.
        size: u8,
    },
    /// The interrupt eventfds (descriptors 0 and 1 of the message).
    SetIrqfd,
    /// Device reset.
    DeviceReset,
}

/// The protocol table as markdown (in `docs/guests.md`, checked by a test).
pub fn commands_markdown() -> String {
    let mut out = String::from(
        "| cmd | name | direction | payload bytes | descriptors | remote replies |\n|---|---|---|---|---|---|\n",
    );
    for c in COMMANDS {
        let payload = c
            .payload
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(" or ");
        let fds = match c.fds {
            FdRule::None => "0".to_string(),
            FdRule::Exactly(n) => n.to_string(),
            FdRule::OneToMax => format!("1..{}", MAX_FDS - 1),
        };
        let dir = match c.direction {
            Direction::ToRemote => "QEMU → remote",
            Direction::ToProxy => "remote → QEMU",
        };
        let reply = if c.reply { "one RET" } else { "nothing" };
        out.push_str(&format!(
            "| {} | {} | {dir} | {payload} | {fds} | {reply} |\n",
            c.cmd as i32, c.name
        ));
    }
    out
}

/// Checks a header before its payload is read: the command exists and the
/// announced size is bounded. Returns the command and payload size.
pub fn check_header(hdr: &MsgHeader) -> Result<(Command, usize), WireError> {
    let raw = hdr.cmd.get();
    let cmd = Command::from_raw(raw).ok_or(WireError::UnknownCommand(raw))?;
    let size = hdr.size.get();
    if size > MAX_PAYLOAD as u64 {
        return Err(WireError::PayloadTooLarge(size));
    }
    Ok((cmd, size as usize))
}

/// Validates a complete message (header already checked by [`check_header`],
/// `payload` is exactly its announced size, `nfds` descriptors came with it)
/// and decodes it.
pub fn decode(cmd: Command, payload: &[u8], nfds: usize) -> Result<Message, WireError> {
    let spec = cmd.spec();
    if spec.direction != Direction::ToRemote {
        return Err(WireError::WrongDirection(cmd));
    }
    if !spec.payload.contains(&payload.len()) {
        return Err(WireError::BadPayloadSize {
            cmd,
            size: payload.len(),
            want: spec.payload,
        });
    }
    let fds_ok = match spec.fds {
        FdRule::None => nfds == 0,
        FdRule::Exactly(n) => nfds == n,
        FdRule::OneToMax => (1..MAX_FDS).contains(&nfds),
    };
    if !fds_ok {
        return Err(WireError::BadFdCount {
            cmd,
            fds: nfds,
            want: spec.fds,
        });
    }
    match cmd {
        Command::SyncSysmem => decode_sysmem(payload, nfds),
        Command::PciCfgWrite | Command::PciCfgRead => {
            let m = PciConfDataMsg::read_from_bytes(payload).map_err(|_| bad_size(cmd, payload))?;
            let (addr, len) = (m.addr.get(), m.len.get());
            let ok = matches!(len, 1 | 2 | 4)
                && addr
                    .checked_add(len as u32)
                    .is_some_and(|end| end <= PCI_CONFIG_SIZE);
            if !ok {
                return Err(WireError::BadConfigAccess { addr, len });
            }
            // Bounded by the check above: addr < 256, len <= 4.
            let (addr, len) = (addr as u16, len as u8);
            Ok(if cmd == Command::PciCfgWrite {
                Message::CfgWrite {
                    addr,
                    len,
                    val: m.val.get(),
                }
            } else {
                Message::CfgRead { addr, len }
            })
        }
        Command::BarWrite | Command::BarRead => {
            let m = BarAccessMsg::read_from_bytes(payload).map_err(|_| bad_size(cmd, payload))?;
            let (addr, size, memory) = (m.addr.get(), m.size.get(), m.memory);
            let space = match memory {
                0 => Space::Io,
                1 => Space::Memory,
                _ => return Err(WireError::BadBarAccess { addr, size, memory }),
            };
            if !matches!(size, 1 | 2 | 4 | 8) {
                return Err(WireError::BadBarAccess { addr, size, memory });
            }
            let size = size as u8;
            Ok(if cmd == Command::BarWrite {
                Message::BarWrite {
                    space,
                    addr,
                    size,
                    val: m.val.get() & size_mask(size),
                }
            } else {
                Message::BarRead { space, addr, size }
            })
        }
        Command::SetIrqfd => Ok(Message::SetIrqfd),
        Command::DeviceReset => Ok(Message::DeviceReset),
        Command::Ret => Err(WireError::WrongDirection(cmd)),
    }
}

fn bad_size(cmd: Command, payload: &[u8]) -> WireError {
    WireError::BadPayloadSize {
        cmd,
        size: payload.len(),
        want: cmd.spec().payload,
    }
}

/// The value mask of an access of `size` bytes (1..=8).
pub fn size_mask(size: u8) -> u64 {
    match size {
        0 => 0,
        1..=7 => (1u64 << (8 * u32::from(size))) - 1,
        _ => u64::MAX,
    }
}

fn decode_sysmem(payload: &[u8], nfds: usize) -> Result<Message, WireError> {
    let m = SyncSysmemMsg::read_from_bytes(payload)
        .map_err(|_| bad_size(Command::SyncSysmem, payload))?;
    let mut regions: Vec<RegionDesc> = Vec::with_capacity(nfds);
    for index in 0..nfds.min(SYSMEM_REGIONS) {
        let (gpa, size, offset) = (
            m.gpas[index].get(),
            m.sizes[index].get(),
            m.offsets[index].get(),
        );
        let bad = WireError::BadRegion {
            index,
            gpa,
            size,
            offset,
        };
        if size == 0 || offset < 0 || gpa.checked_add(size).is_none() {
            return Err(bad);
        }
        // the region must end inside what a file offset (off_t) can address
        if (offset as u64)
            .checked_add(size)
            .is_none_or(|end| end > i64::MAX as u64)
        {
            return Err(bad);
        }
        let end = gpa + size;
        if regions.iter().any(|r| gpa < r.gpa + r.size && r.gpa < end) {
            return Err(bad);
        }
        regions.push(RegionDesc {
            gpa,
            size,
            offset: offset as u64,
        });
    }
    Ok(Message::SyncSysmem(regions))
}

/// Encodes a message header.
pub fn header(cmd: Command, size: usize) -> MsgHeader {
    MsgHeader {
        cmd: I32::new(cmd as i32),
        pad: [0; 4],
        size: U64::new(size as u64),
    }
}

/// The bytes of a `RET` carrying `value` (what the remote sends).
pub fn encode_ret(value: u64) -> [u8; HEADER_SIZE + 8] {
    let mut out = [0u8; HEADER_SIZE + 8];
    out[..HEADER_SIZE].copy_from_slice(header(Command::Ret, 8).as_bytes());
    out[HEADER_SIZE..].copy_from_slice(&value.to_le_bytes());
    out
}

/// The bytes of a message to the remote (tests and the fuzz target play QEMU
/// with this).
pub fn encode(cmd: Command, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_SIZE + payload.len());
    out.extend_from_slice(header(cmd, payload.len()).as_bytes());
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(cmd: i32, size: u64) -> MsgHeader {
        MsgHeader {
            cmd: I32::new(cmd),
            pad: [0; 4],
            size: U64::new(size),
        }
    }

    #[test]
    fn layout_matches_qemu() {
        assert_eq!(size_of::<MsgHeader>(), HEADER_SIZE);
        assert_eq!(size_of::<SyncSysmemMsg>(), 192);
        assert_eq!(size_of::<PciConfDataMsg>(), 12);
        assert_eq!(size_of::<BarAccessMsg>(), 24);
        assert_eq!(MAX_PAYLOAD, size_of::<SyncSysmemMsg>());
        let h = header(Command::BarRead, 24);
        assert_eq!(
            h.as_bytes(),
            &[5, 0, 0, 0, 0, 0, 0, 0, 24, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            encode_ret(0x1122_3344_5566_7788),
            [
                1, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33,
                0x22, 0x11
            ]
        );
    }

    #[test]
    fn every_command_has_one_row() {
        for raw in 0..8 {
            let c = Command::from_raw(raw).expect("command");
            assert_eq!(c as i32, raw);
            assert_eq!(COMMANDS.iter().filter(|s| s.cmd == c).count(), 1);
            assert_eq!(c.spec().cmd, c);
        }
        assert_eq!(Command::from_raw(8), None);
        assert_eq!(Command::from_raw(-1), None);
    }

    #[test]
    fn header_checks() {
        assert_eq!(check_header(&hdr(3, 12)), Ok((Command::PciCfgRead, 12)));
        assert_eq!(check_header(&hdr(9, 0)), Err(WireError::UnknownCommand(9)));
        assert_eq!(
            check_header(&hdr(i32::MIN, 0)),
            Err(WireError::UnknownCommand(i32::MIN))
        );
        assert_eq!(
            check_header(&hdr(0, 193)),
            Err(WireError::PayloadTooLarge(193))
        );
        assert_eq!(
            check_header(&hdr(0, u64::MAX)),
            Err(WireError::PayloadTooLarge(u64::MAX))
        );
    }

    fn conf(addr: u32, val: u32, len: i32) -> Vec<u8> {
        PciConfDataMsg {
            addr: U32::new(addr),
            val: U32::new(val),
            len: I32::new(len),
        }
        .as_bytes()
        .to_vec()
    }

    fn bar(addr: u64, val: u64, size: u32, memory: u8) -> Vec<u8> {
        BarAccessMsg {
            addr: U64::new(addr),
            val: U64::new(val),
            size: U32::new(size),
            memory,
            pad: [0; 3],
        }
        .as_bytes()
        .to_vec()
    }

    #[test]
    fn config_accesses() {
        assert_eq!(
            decode(Command::PciCfgRead, &conf(0x3c, 0, 1), 0),
            Ok(Message::CfgRead { addr: 0x3c, len: 1 })
        );
        assert_eq!(
            decode(Command::PciCfgWrite, &conf(0xfc, 7, 4), 0),
            Ok(Message::CfgWrite {
                addr: 0xfc,
                len: 4,
                val: 7
            })
        );
        for (addr, len) in [
            (0xfd, 4),
            (0x100, 1),
            (0, 3),
            (0, 0),
            (0, -1),
            (u32::MAX, 4),
            (0, 8),
        ] {
            assert_eq!(
                decode(Command::PciCfgRead, &conf(addr, 0, len), 0),
                Err(WireError::BadConfigAccess { addr, len }),
                "addr {addr:#x} len {len}"
            );
        }
        assert!(matches!(
            decode(Command::PciCfgRead, &conf(0, 0, 4)[..11], 0),
            Err(WireError::BadPayloadSize { .. })
        ));
        assert!(matches!(
            decode(Command::PciCfgRead, &conf(0, 0, 4), 1),
            Err(WireError::BadFdCount { .. })
        ));
    }

    #[test]
    fn bar_accesses() {
        assert_eq!(
            decode(Command::BarWrite, &bar(0xc000, 0x1_0000_00ff, 1, 0), 0),
            Ok(Message::BarWrite {
                space: Space::Io,
                addr: 0xc000,
                size: 1,
                val: 0xff
            })
        );
        assert_eq!(
            decode(Command::BarRead, &bar(0xfebf_f000, 0, 8, 1), 0),
            Ok(Message::BarRead {
                space: Space::Memory,
                addr: 0xfebf_f000,
                size: 8
            })
        );
        for (size, memory) in [(0, 0), (3, 1), (16, 1), (u32::MAX, 0), (4, 2), (4, 0xff)] {
            assert!(matches!(
                decode(Command::BarRead, &bar(0, 0, size, memory), 0),
                Err(WireError::BadBarAccess { .. })
            ));
        }
    }

    fn sysmem(regions: &[(u64, u64, i64)]) -> Vec<u8> {
        let mut m = SyncSysmemMsg::default();
        for (i, (g, s, o)) in regions.iter().enumerate() {
            m.gpas[i] = U64::new(*g);
            m.sizes[i] = U64::new(*s);
            m.offsets[i] = I64::new(*o);
        }
        m.as_bytes().to_vec()
    }

    #[test]
    fn sysmem_regions() {
        let p = sysmem(&[(0, 0xc0000, 0), (0x100000, 0x1ff00000, 0x100000)]);
        assert_eq!(
            decode(Command::SyncSysmem, &p, 2),
            Ok(Message::SyncSysmem(vec![
                RegionDesc {
                    gpa: 0,
                    size: 0xc0000,
                    offset: 0
                },
                RegionDesc {
                    gpa: 0x100000,
                    size: 0x1ff00000,
                    offset: 0x100000
                }
            ]))
        );
        // the fd count says how many regions are used
        assert!(
            matches!(decode(Command::SyncSysmem, &p, 1), Ok(Message::SyncSysmem(r)) if r.len() == 1)
        );
        // no fds, or 8 or more: rejected
        for n in [0, 8, 9] {
            assert!(matches!(
                decode(Command::SyncSysmem, &p, n),
                Err(WireError::BadFdCount { .. })
            ));
        }
        // empty, wrapping, negative offset, offset+size wrapping, overlapping
        for bad in [
            vec![(0, 0, 0)],
            vec![(u64::MAX - 10, 0x1000, 0)],
            vec![(0, 0x1000, -4096)],
            vec![(0, 0x1000, i64::MAX)],
            vec![(0, 0x2000, 0), (0x1000, 0x1000, 0)],
            vec![(0x1000, 0x1000, 0), (0, 0x2000, 0)],
        ] {
            let n = bad.len();
            assert!(
                matches!(
                    decode(Command::SyncSysmem, &sysmem(&bad), n),
                    Err(WireError::BadRegion { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            decode(Command::SyncSysmem, &p[..191], 2),
            Err(WireError::BadPayloadSize { .. })
        ));
    }

    #[test]
    fn irqfd_reset_ret() {
        assert_eq!(decode(Command::SetIrqfd, &[], 2), Ok(Message::SetIrqfd));
        assert!(matches!(
            decode(Command::SetIrqfd, &[], 1),
            Err(WireError::BadFdCount { .. })
        ));
        assert!(matches!(
            decode(Command::SetIrqfd, &[0; 8], 2),
            Err(WireError::BadPayloadSize { .. })
        ));
        assert_eq!(
            decode(Command::DeviceReset, &[], 0),
            Ok(Message::DeviceReset)
        );
        assert_eq!(
            decode(Command::Ret, &[0; 8], 0),
            Err(WireError::WrongDirection(Command::Ret))
        );
    }

    #[test]
    fn docs_table_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/guests.md");
        let doc = std::fs::read_to_string(path).expect("docs/guests.md");
        let table = commands_markdown();
        let begin = "<!-- mpqemu:begin -->\n";
        let end = "<!-- mpqemu:end -->";
        let got = doc
            .split_once(begin)
            .and_then(|(_, rest)| rest.split_once(end))
            .map(|(t, _)| t);
        assert_eq!(
            got,
            Some(table.as_str()),
            "docs/guests.md protocol table; want:\n{table}"
        );
    }

    #[test]
    fn masks() {
        assert_eq!(size_mask(1), 0xff);
        assert_eq!(size_mask(2), 0xffff);
        assert_eq!(size_mask(4), 0xffff_ffff);
        assert_eq!(size_mask(8), u64::MAX);
    }
}

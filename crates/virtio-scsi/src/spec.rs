//! virtio-scsi wire structures and constants (virtio 1.2 §5.6, "SCSI Host
//! Device"). All fields little-endian.

use zerocopy::byteorder::{LittleEndian, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Device ID of a SCSI host (§5.6.1).
pub const DEVICE_ID: u32 = 8;

/// Feature bits (§5.6.3 and §6).
pub mod feature {
    /// VIRTIO_SCSI_F_INOUT: bidirectional requests (not offered).
    pub const INOUT: u64 = 1 << 0;
    /// VIRTIO_SCSI_F_HOTPLUG: LUN hot-plug/unplug events.
    pub const HOTPLUG: u64 = 1 << 1;
    /// VIRTIO_SCSI_F_CHANGE: LUN parameter change events.
    pub const CHANGE: u64 = 1 << 2;
    /// VIRTIO_SCSI_F_T10_PI (not offered).
    pub const T10_PI: u64 = 1 << 3;
    /// VIRTIO_RING_F_INDIRECT_DESC.
    pub const INDIRECT_DESC: u64 = 1 << 28;
    /// VIRTIO_RING_F_EVENT_IDX.
    pub const EVENT_IDX: u64 = 1 << 29;
    /// VIRTIO_F_VERSION_1.
    pub const VERSION_1: u64 = 1 << 32;
}

/// Device status bits (§2.1).
pub mod status {
    /// ACKNOWLEDGE.
    pub const ACKNOWLEDGE: u8 = 1;
    /// DRIVER.
    pub const DRIVER: u8 = 2;
    /// DRIVER_OK.
    pub const DRIVER_OK: u8 = 4;
    /// FEATURES_OK.
    pub const FEATURES_OK: u8 = 8;
    /// DEVICE_NEEDS_RESET.
    pub const DEVICE_NEEDS_RESET: u8 = 64;
    /// FAILED.
    pub const FAILED: u8 = 128;
}

/// Response codes (§5.6.6.1, §5.6.6.2).
pub mod response {
    /// VIRTIO_SCSI_S_OK / FUNCTION COMPLETE.
    pub const OK: u8 = 0;
    /// VIRTIO_SCSI_S_OVERRUN.
    pub const OVERRUN: u8 = 1;
    /// VIRTIO_SCSI_S_ABORTED.
    pub const ABORTED: u8 = 2;
    /// VIRTIO_SCSI_S_BAD_TARGET.
    pub const BAD_TARGET: u8 = 3;
    /// VIRTIO_SCSI_S_RESET.
    pub const RESET: u8 = 4;
    /// VIRTIO_SCSI_S_BUSY.
    pub const BUSY: u8 = 5;
    /// VIRTIO_SCSI_S_TRANSPORT_FAILURE.
    pub const TRANSPORT_FAILURE: u8 = 6;
    /// VIRTIO_SCSI_S_TARGET_FAILURE.
    pub const TARGET_FAILURE: u8 = 7;
    /// VIRTIO_SCSI_S_NEXUS_FAILURE.
    pub const NEXUS_FAILURE: u8 = 8;
    /// VIRTIO_SCSI_S_FAILURE.
    pub const FAILURE: u8 = 9;
    /// VIRTIO_SCSI_S_FUNCTION_SUCCEEDED.
    pub const FUNCTION_SUCCEEDED: u8 = 10;
    /// VIRTIO_SCSI_S_FUNCTION_REJECTED.
    pub const FUNCTION_REJECTED: u8 = 11;
    /// VIRTIO_SCSI_S_INCORRECT_LUN.
    pub const INCORRECT_LUN: u8 = 12;
}

/// Task attributes (§5.6.6.1).
pub mod task_attr {
    /// VIRTIO_SCSI_S_SIMPLE.
    pub const SIMPLE: u8 = 0;
    /// VIRTIO_SCSI_S_ORDERED.
    pub const ORDERED: u8 = 1;
    /// VIRTIO_SCSI_S_HEAD.
    pub const HEAD: u8 = 2;
    /// VIRTIO_SCSI_S_ACA.
    pub const ACA: u8 = 3;
}

/// Control queue request types and TMF subtypes (§5.6.6.2).
pub mod ctrl {
    /// VIRTIO_SCSI_T_TMF.
    pub const TMF: u32 = 0;
    /// VIRTIO_SCSI_T_AN_QUERY.
    pub const AN_QUERY: u32 = 1;
    /// VIRTIO_SCSI_T_AN_SUBSCRIBE.
    pub const AN_SUBSCRIBE: u32 = 2;
    /// ABORT TASK.
    pub const ABORT_TASK: u32 = 0;
    /// ABORT TASK SET.
    pub const ABORT_TASK_SET: u32 = 1;
    /// CLEAR ACA.
    pub const CLEAR_ACA: u32 = 2;
    /// CLEAR TASK SET.
    pub const CLEAR_TASK_SET: u32 = 3;
    /// I_T NEXUS RESET.
    pub const I_T_NEXUS_RESET: u32 = 4;
    /// LOGICAL UNIT RESET.
    pub const LOGICAL_UNIT_RESET: u32 = 5;
    /// QUERY TASK.
    pub const QUERY_TASK: u32 = 6;
    /// QUERY TASK SET.
    pub const QUERY_TASK_SET: u32 = 7;
}

/// Event queue events (§5.6.6.3).
pub mod event {
    /// VIRTIO_SCSI_T_NO_EVENT.
    pub const NO_EVENT: u32 = 0;
    /// VIRTIO_SCSI_T_TRANSPORT_RESET.
    pub const TRANSPORT_RESET: u32 = 1;
    /// VIRTIO_SCSI_T_ASYNC_NOTIFY.
    pub const ASYNC_NOTIFY: u32 = 2;
    /// VIRTIO_SCSI_T_PARAM_CHANGE.
    pub const PARAM_CHANGE: u32 = 3;
    /// VIRTIO_SCSI_T_EVENTS_MISSED flag.
    pub const EVENTS_MISSED: u32 = 0x8000_0000;
    /// Transport reset reason: LUN hard reset.
    pub const RESET_HARD: u32 = 0;
    /// Transport reset reason: rescan (LUN appeared).
    pub const RESET_RESCAN: u32 = 1;
    /// Transport reset reason: LUN removed.
    pub const RESET_REMOVED: u32 = 2;
}

/// `struct virtio_scsi_config` (§5.6.4).
#[derive(Debug, Clone, Copy, Default, IntoBytes, FromBytes, Immutable, KnownLayout)]
#[repr(C, packed)]
pub struct VirtioScsiConfig {
    /// Request queues.
    pub num_queues: U32<LittleEndian>,
    /// Maximum data segments per command.
    pub seg_max: U32<LittleEndian>,
    /// Transfer size hint, in 512-byte sectors.
    pub max_sectors: U32<LittleEndian>,
    /// Maximum linked commands per LUN.
    pub cmd_per_lun: U32<LittleEndian>,
    /// Size the device fills in eventq buffers.
    pub event_info_size: U32<LittleEndian>,
    /// Sense bytes the device writes (driver-writable, default 96).
    pub sense_size: U32<LittleEndian>,
    /// CDB bytes the driver writes (driver-writable, default 32).
    pub cdb_size: U32<LittleEndian>,
    /// Highest channel (0).
    pub max_channel: U16<LittleEndian>,
    /// Highest target.
    pub max_target: U16<LittleEndian>,
    /// Highest LUN.
    pub max_lun: U32<LittleEndian>,
}

/// Default `sense_size` (§5.6.4.2).
pub const DEFAULT_SENSE_SIZE: u32 = 96;
/// Default `cdb_size` (§5.6.4.2).
pub const DEFAULT_CDB_SIZE: u32 = 32;

/// The fixed start of `struct virtio_scsi_req_cmd` (device-readable), before
/// `cdb[cdb_size]` (§5.6.6.1).
#[derive(Debug, Clone, Copy, Default, IntoBytes, FromBytes, Immutable, KnownLayout)]
#[repr(C, packed)]
pub struct CmdReqHeader {
    /// LUN address.
    pub lun: [u8; 8],
    /// Command identifier (tag).
    pub id: U64<LittleEndian>,
    /// Task attribute.
    pub task_attr: u8,
    /// Priority.
    pub prio: u8,
    /// Command reference number.
    pub crn: u8,
}

/// The fixed start of the device-writable part of a command, before
/// `sense[sense_size]` (§5.6.6.1).
#[derive(Debug, Clone, Copy, Default, IntoBytes, FromBytes, Immutable, KnownLayout)]
#[repr(C, packed)]
pub struct CmdRespHeader {
    /// Sense bytes written.
    pub sense_len: U32<LittleEndian>,
    /// Residual (data length - bytes transferred).
    pub residual: U32<LittleEndian>,
    /// Status qualifier.
    pub status_qualifier: U16<LittleEndian>,
    /// SCSI status.
    pub status: u8,
    /// virtio-scsi response code.
    pub response: u8,
}

/// `struct virtio_scsi_ctrl_tmf`, device-readable part (§5.6.6.2).
#[derive(Debug, Clone, Copy, Default, IntoBytes, FromBytes, Immutable, KnownLayout)]
#[repr(C, packed)]
pub struct CtrlTmfReq {
    /// VIRTIO_SCSI_T_TMF.
    pub type_: U32<LittleEndian>,
    /// Which function.
    pub subtype: U32<LittleEndian>,
    /// LUN address.
    pub lun: [u8; 8],
    /// Task tag (ABORT TASK, QUERY TASK).
    pub id: U64<LittleEndian>,
}

/// `struct virtio_scsi_ctrl_an`, device-readable part (§5.6.6.2).
#[derive(Debug, Clone, Copy, Default, IntoBytes, FromBytes, Immutable, KnownLayout)]
#[repr(C, packed)]
pub struct CtrlAnReq {
    /// VIRTIO_SCSI_T_AN_QUERY or _SUBSCRIBE.
    pub type_: U32<LittleEndian>,
    /// LUN address.
    pub lun: [u8; 8],
    /// Events asked for.
    pub event_requested: U32<LittleEndian>,
}

/// `struct virtio_scsi_ctrl_an`, device-writable part.
#[derive(Debug, Clone, Copy, Default, IntoBytes, FromBytes, Immutable, KnownLayout)]
#[repr(C, packed)]
pub struct CtrlAnResp {
    /// Events supported.
    pub event_actual: U32<LittleEndian>,
    /// Response code.
    pub response: u8,
}

/// `struct virtio_scsi_event` (§5.6.6.3).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout,
)]
#[repr(C, packed)]
pub struct VirtioScsiEvent {
    /// Event type (bit 31: events missed).
    pub event: U32<LittleEndian>,
    /// LUN address.
    pub lun: [u8; 8],
    /// Reason.
    pub reason: U32<LittleEndian>,
}

/// The 8-byte virtio LUN address of `target`/`lun` (§5.6.6.1): 1, target,
/// single-level LUN (flat space addressing), four zero bytes.
pub fn lun_address(target: u8, lun: u16) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = 1;
    b[1] = target;
    b[2] = 0x40 | ((lun >> 8) as u8 & 0x3f);
    b[3] = lun as u8;
    b
}

/// A decoded virtio LUN address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LunAddr {
    /// Target and a single-level LUN.
    Lun {
        /// Target.
        target: u8,
        /// LUN (0..=16383).
        lun: u16,
    },
    /// Target exists in the address, but the LUN field is not a
    /// single-level LUN this device understands.
    BadLun {
        /// Target.
        target: u8,
    },
    /// Not a target address (first byte ≠ 1).
    NoTarget,
}

/// Decodes a virtio LUN address: peripheral (00b, bus 0) or flat space
/// (01b) single-level LUNs; anything else is [`LunAddr::BadLun`].
pub fn parse_lun(b: &[u8; 8]) -> LunAddr {
    if b[0] != 1 {
        return LunAddr::NoTarget;
    }
    let target = b[1];
    if b[4..] != [0; 4] {
        return LunAddr::BadLun { target };
    }
    match b[2] >> 6 {
        0 if b[2] == 0 => LunAddr::Lun {
            target,
            lun: u16::from(b[3]),
        },
        1 => LunAddr::Lun {
            target,
            lun: (u16::from(b[2] & 0x3f) << 8) | u16::from(b[3]),
        },
        _ => LunAddr::BadLun { target },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_the_spec() {
        assert_eq!(std::mem::size_of::<VirtioScsiConfig>(), 36);
        assert_eq!(std::mem::size_of::<CmdReqHeader>(), 19);
        assert_eq!(std::mem::size_of::<CmdRespHeader>(), 12);
        assert_eq!(std::mem::size_of::<CtrlTmfReq>(), 24);
        assert_eq!(std::mem::size_of::<CtrlAnReq>(), 16);
        assert_eq!(std::mem::size_of::<CtrlAnResp>(), 5);
        assert_eq!(std::mem::size_of::<VirtioScsiEvent>(), 16);
    }

    #[test]
    fn lun_addresses() {
        assert_eq!(lun_address(3, 0x123), [1, 3, 0x41, 0x23, 0, 0, 0, 0]);
        assert_eq!(
            parse_lun(&lun_address(3, 0x123)),
            LunAddr::Lun {
                target: 3,
                lun: 0x123
            }
        );
        assert_eq!(
            parse_lun(&[1, 2, 0, 5, 0, 0, 0, 0]),
            LunAddr::Lun { target: 2, lun: 5 }
        );
        assert_eq!(
            parse_lun(&[1, 2, 0x80, 5, 0, 0, 0, 0]),
            LunAddr::BadLun { target: 2 }
        );
        assert_eq!(
            parse_lun(&[1, 2, 0x40, 5, 0, 1, 0, 0]),
            LunAddr::BadLun { target: 2 }
        );
        assert_eq!(parse_lun(&[0xc1, 1, 0, 0, 0, 0, 0, 0]), LunAddr::NoTarget);
    }
}

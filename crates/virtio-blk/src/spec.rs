//! Wire structures and constants of the virtio block device (virtio 1.2/1.3
//! §5.2 "Block Device"), as `zerocopy` types.
//!
//! Every multi-byte field is little-endian (`zerocopy::little_endian`): the
//! modern interface mandates it, and for legacy (pre-`VERSION_1`) drivers it
//! is the guest's native order on every architecture vmstor targets
//! (x86-64, aarch64, riscv64). All structs are `Unaligned`, so they can be
//! read from any guest address and have no hidden padding.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The protocol's sector: every `sector`, `capacity` and `*_sectors` field
/// counts 512-byte units, whatever the logical block size (§5.2.4).
pub const SECTOR_SIZE: u64 = 512;
/// `log2(SECTOR_SIZE)`.
pub const SECTOR_SHIFT: u32 = 9;
/// Length of the `VIRTIO_BLK_T_GET_ID` string (§5.2.6).
pub const ID_BYTES: usize = 20;

/// Request header: the first 16 device-readable bytes of every request
/// (`struct virtio_blk_req` up to `data`, virtio 1.2 §5.2.6 "Device
/// Operation").
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct VirtioBlkReqHeader {
    /// Request type (`VIRTIO_BLK_T_*`).
    pub type_: U32,
    /// Reserved (legacy `ioprio`); ignored.
    pub reserved: U32,
    /// Starting 512-byte sector for IN/OUT; unused otherwise.
    pub sector: U64,
}

/// One segment of a DISCARD / WRITE_ZEROES request
/// (`struct virtio_blk_discard_write_zeroes`, virtio 1.2 §5.2.6).
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct VirtioBlkDiscardWriteZeroes {
    /// First 512-byte sector of the range.
    pub sector: U64,
    /// Number of 512-byte sectors.
    pub num_sectors: U32,
    /// Bit 0: `unmap` (WRITE_ZEROES only); bits 1..31 reserved.
    pub flags: U32,
}

/// The `unmap` flag of [`VirtioBlkDiscardWriteZeroes::flags`].
pub const DWZ_FLAG_UNMAP: u32 = virtio_bindings::virtio_blk::VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP;

/// Device configuration layout (`struct virtio_blk_config`, virtio 1.2
/// §5.2.4 "Device configuration layout"), including the secure-erase and
/// zoned fields this device leaves zero. 96 bytes.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct VirtioBlkConfig {
    /// Capacity in 512-byte sectors.
    pub capacity: U64,
    /// Maximum size of one data segment (`SIZE_MAX`).
    pub size_max: U32,
    /// Maximum number of data segments per request (`SEG_MAX`).
    pub seg_max: U32,
    /// `geometry.cylinders` (`GEOMETRY`, not offered).
    pub geometry_cylinders: U16,
    /// `geometry.heads`.
    pub geometry_heads: u8,
    /// `geometry.sectors`.
    pub geometry_sectors: u8,
    /// Logical block size in bytes (`BLK_SIZE`).
    pub blk_size: U32,
    /// `topology.physical_block_exp`: log2(logical blocks per physical block).
    pub physical_block_exp: u8,
    /// `topology.alignment_offset`: first aligned logical block.
    pub alignment_offset: u8,
    /// `topology.min_io_size` in logical blocks.
    pub min_io_size: U16,
    /// `topology.opt_io_size` in logical blocks.
    pub opt_io_size: U32,
    /// Cache mode: 1 writeback, 0 writethrough (`CONFIG_WCE`).
    pub writeback: u8,
    /// Padding, zero.
    pub unused0: u8,
    /// Number of request queues (`MQ`).
    pub num_queues: U16,
    /// Maximum sectors in one discard segment (`DISCARD`).
    pub max_discard_sectors: U32,
    /// Maximum discard segments per request.
    pub max_discard_seg: U32,
    /// Discard granularity in sectors (a splitting hint).
    pub discard_sector_alignment: U32,
    /// Maximum sectors in one write-zeroes segment (`WRITE_ZEROES`).
    pub max_write_zeroes_sectors: U32,
    /// Maximum write-zeroes segments per request.
    pub max_write_zeroes_seg: U32,
    /// Whether WRITE_ZEROES with `unmap` may deallocate.
    pub write_zeroes_may_unmap: u8,
    /// Padding, zero.
    pub unused1: [u8; 3],
    /// `SECURE_ERASE` (not offered).
    pub max_secure_erase_sectors: U32,
    /// `SECURE_ERASE` (not offered).
    pub max_secure_erase_seg: U32,
    /// `SECURE_ERASE` (not offered).
    pub secure_erase_sector_alignment: U32,
    /// `zoned.zone_sectors` (`ZONED`, not offered).
    pub zone_sectors: U32,
    /// `zoned.max_open_zones`.
    pub max_open_zones: U32,
    /// `zoned.max_active_zones`.
    pub max_active_zones: U32,
    /// `zoned.max_append_sectors`.
    pub max_append_sectors: U32,
    /// `zoned.write_granularity`.
    pub write_granularity: U32,
    /// `zoned.model`.
    pub zoned_model: u8,
    /// Padding, zero.
    pub unused2: [u8; 3],
}

/// Size of [`VirtioBlkConfig`] in bytes.
pub const CONFIG_SIZE: usize = std::mem::size_of::<VirtioBlkConfig>();

/// The request status byte (virtio 1.2 §5.2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum BlkStatus {
    /// `VIRTIO_BLK_S_OK`.
    Ok = virtio_bindings::virtio_blk::VIRTIO_BLK_S_OK as u8,
    /// `VIRTIO_BLK_S_IOERR`: device or driver error.
    IoErr = virtio_bindings::virtio_blk::VIRTIO_BLK_S_IOERR as u8,
    /// `VIRTIO_BLK_S_UNSUPP`: request not supported.
    Unsupp = virtio_bindings::virtio_blk::VIRTIO_BLK_S_UNSUPP as u8,
}

impl BlkStatus {
    /// The status name as the spec spells it (`OK`, `IOERR`, `UNSUPP`).
    pub fn name(self) -> &'static str {
        match self {
            BlkStatus::Ok => "OK",
            BlkStatus::IoErr => "IOERR",
            BlkStatus::Unsupp => "UNSUPP",
        }
    }

    /// Decodes a status byte written by the device.
    pub fn from_byte(b: u8) -> Option<BlkStatus> {
        [BlkStatus::Ok, BlkStatus::IoErr, BlkStatus::Unsupp]
            .into_iter()
            .find(|s| *s as u8 == b)
    }
}

/// Device status register bits (virtio 1.2 §2.1).
pub mod device_status {
    use virtio_bindings::virtio_config as c;
    /// The guest found the device.
    pub const ACKNOWLEDGE: u8 = c::VIRTIO_CONFIG_S_ACKNOWLEDGE as u8;
    /// The guest knows how to drive it.
    pub const DRIVER: u8 = c::VIRTIO_CONFIG_S_DRIVER as u8;
    /// The driver is set up and ready.
    pub const DRIVER_OK: u8 = c::VIRTIO_CONFIG_S_DRIVER_OK as u8;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u8 = c::VIRTIO_CONFIG_S_FEATURES_OK as u8;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u8 = c::VIRTIO_CONFIG_S_NEEDS_RESET as u8;
    /// The guest gave up on the device.
    pub const FAILED: u8 = c::VIRTIO_CONFIG_S_FAILED as u8;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn layouts_match_the_spec() {
        assert_eq!(size_of::<VirtioBlkReqHeader>(), 16);
        assert_eq!(size_of::<VirtioBlkDiscardWriteZeroes>(), 16);
        assert_eq!(CONFIG_SIZE, 96);
        // Offsets from the spec's struct (and Linux's uapi header).
        assert_eq!(offset_of!(VirtioBlkConfig, blk_size), 20);
        assert_eq!(offset_of!(VirtioBlkConfig, physical_block_exp), 24);
        assert_eq!(offset_of!(VirtioBlkConfig, opt_io_size), 28);
        assert_eq!(offset_of!(VirtioBlkConfig, writeback), 32);
        assert_eq!(offset_of!(VirtioBlkConfig, num_queues), 34);
        assert_eq!(offset_of!(VirtioBlkConfig, max_discard_sectors), 36);
        assert_eq!(offset_of!(VirtioBlkConfig, max_write_zeroes_sectors), 48);
        assert_eq!(offset_of!(VirtioBlkConfig, write_zeroes_may_unmap), 56);
        assert_eq!(offset_of!(VirtioBlkConfig, max_secure_erase_sectors), 60);
        assert_eq!(offset_of!(VirtioBlkConfig, zone_sectors), 72);
        assert_eq!(offset_of!(VirtioBlkConfig, zoned_model), 92);
    }

    #[test]
    fn status_bytes_round_trip() {
        for s in [BlkStatus::Ok, BlkStatus::IoErr, BlkStatus::Unsupp] {
            assert_eq!(BlkStatus::from_byte(s as u8), Some(s));
        }
        assert_eq!(BlkStatus::IoErr as u8, 1);
        assert_eq!(BlkStatus::Unsupp as u8, 2);
        assert_eq!(BlkStatus::from_byte(3), None);
    }
}

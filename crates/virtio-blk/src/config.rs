//! Device options ([`BlkOptions`]), the configuration space they produce,
//! and the table of config fields ([`config_fields`]) that drives the
//! documentation.
//!
//! Contract: options are validated once, in [`crate::VirtioBlk::new`]
//! ([`BlkOptions::validate`]); the guest-visible limits derived from them
//! are the exact limits the request parser enforces ([`RequestLimits`]), so
//! the device never advertises a bound it does not check or checks a bound
//! it did not advertise.

use std::mem::{offset_of, size_of_val};

use vmstor_hostio::{DiscardMode, Disk};
use zerocopy::FromZeros;

use crate::features::Features;
use crate::spec::{VirtioBlkConfig, ID_BYTES, SECTOR_SIZE};

/// Largest number of descriptors one chain may have (header + data +
/// status). Longer chains cannot be parsed within a bounded budget and
/// make the device need a reset (QEMU's `VIRTQUEUE_MAX_SIZE` is the same).
pub const MAX_CHAIN_DESCRIPTORS: usize = 1024;
/// Largest queue size the device accepts.
pub const MAX_QUEUE_SIZE: u16 = 1024;
/// Largest `max_discard_seg` / `max_write_zeroes_seg` accepted in options.
pub const MAX_DWZ_SEGMENTS: u32 = 256;

/// Device options. `Default` gives one 256-entry queue, every configurable
/// feature, `seg_max` 254, `size_max` 1 MiB, 2 GiB discard/zeroing
/// segments, 32 segments per discard/zeroing request and an empty serial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlkOptions {
    /// Which of [`Features::CONFIGURABLE`] to offer (other bits ignored).
    pub features: Features,
    /// Number of request queues (1..=64). More than one offers `MQ`.
    pub num_queues: u16,
    /// Maximum (and reset) size of each queue: a power of two, 2..=1024.
    pub queue_size: u16,
    /// GET_ID string: at most 20 bytes, NUL-padded when shorter.
    pub serial: Vec<u8>,
    /// `seg_max`: data segments per request, 1..=1022.
    pub seg_max: u32,
    /// `size_max`: bytes per data segment, at least 4096.
    pub size_max: u32,
    /// `opt_io_size` in logical blocks (0 = no hint).
    pub opt_io_size: u32,
    /// `max_discard_sectors`: a multiple of the logical block (in sectors).
    pub max_discard_sectors: u32,
    /// `max_discard_seg`: 1..=256.
    pub max_discard_seg: u32,
    /// `max_write_zeroes_sectors`: a multiple of the logical block.
    pub max_write_zeroes_sectors: u32,
    /// `max_write_zeroes_seg`: 1..=256.
    pub max_write_zeroes_seg: u32,
}

impl Default for BlkOptions {
    fn default() -> Self {
        BlkOptions {
            features: Features::CONFIGURABLE,
            num_queues: 1,
            queue_size: 256,
            serial: Vec::new(),
            seg_max: 254,
            size_max: 1 << 20,
            opt_io_size: 0,
            max_discard_sectors: 1 << 22,
            max_discard_seg: 32,
            max_write_zeroes_sectors: 1 << 22,
            max_write_zeroes_seg: 32,
        }
    }
}

/// Why options were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    /// A field is outside its accepted range.
    #[error("{field} = {value}: {why}")]
    Invalid {
        /// The option.
        field: &'static str,
        /// The value given.
        value: u64,
        /// The accepted values.
        why: &'static str,
    },
}

fn invalid(field: &'static str, value: impl Into<u64>, why: &'static str) -> OptionsError {
    OptionsError::Invalid {
        field,
        value: value.into(),
        why,
    }
}

impl BlkOptions {
    /// Checks every option against its range, for a disk with logical block
    /// size `lbs`.
    pub fn validate(&self, lbs: u32) -> Result<(), OptionsError> {
        if !(1..=64).contains(&self.num_queues) {
            return Err(invalid("num_queues", self.num_queues, "must be 1..=64"));
        }
        if !(2..=MAX_QUEUE_SIZE).contains(&self.queue_size) || !self.queue_size.is_power_of_two() {
            return Err(invalid(
                "queue_size",
                self.queue_size,
                "must be a power of two in 2..=1024",
            ));
        }
        if self.serial.len() > ID_BYTES {
            return Err(invalid(
                "serial",
                self.serial.len() as u64,
                "must be at most 20 bytes",
            ));
        }
        if !(1..=(MAX_CHAIN_DESCRIPTORS as u32 - 2)).contains(&self.seg_max) {
            return Err(invalid("seg_max", self.seg_max, "must be 1..=1022"));
        }
        if self.size_max < 4096 {
            return Err(invalid("size_max", self.size_max, "must be at least 4096"));
        }
        let lbs_sectors = (u64::from(lbs) / SECTOR_SIZE).max(1) as u32;
        for (field, v) in [
            ("max_discard_sectors", self.max_discard_sectors),
            ("max_write_zeroes_sectors", self.max_write_zeroes_sectors),
        ] {
            if v == 0 || v % lbs_sectors != 0 {
                return Err(invalid(
                    field,
                    v,
                    "must be a non-zero multiple of the logical block size in sectors",
                ));
            }
        }
        for (field, v) in [
            ("max_discard_seg", self.max_discard_seg),
            ("max_write_zeroes_seg", self.max_write_zeroes_seg),
        ] {
            if !(1..=MAX_DWZ_SEGMENTS).contains(&v) {
                return Err(invalid(field, v, "must be 1..=256"));
            }
        }
        Ok(())
    }

    /// The serial as the 20-byte GET_ID answer.
    pub fn id_bytes(&self) -> [u8; ID_BYTES] {
        let mut id = [0u8; ID_BYTES];
        let n = self.serial.len().min(ID_BYTES);
        id[..n].copy_from_slice(&self.serial[..n]);
        id
    }

    /// The limits the request parser enforces once `negotiated` features
    /// are known. This is also what a vhost-user-blk backend passes to
    /// [`crate::BlockWorker::new`].
    pub fn limits(&self, disk: &Disk, negotiated: Features) -> RequestLimits {
        RequestLimits {
            features: negotiated,
            read_only: disk.read_only(),
            seg_max: if negotiated.contains(Features::SEG_MAX) {
                self.seg_max as usize
            } else {
                MAX_CHAIN_DESCRIPTORS - 2
            },
            size_max: negotiated
                .contains(Features::SIZE_MAX)
                .then_some(self.size_max),
            max_discard_sectors: self.max_discard_sectors,
            max_discard_seg: self.max_discard_seg,
            max_write_zeroes_sectors: self.max_write_zeroes_sectors,
            max_write_zeroes_seg: self.max_write_zeroes_seg,
            write_zeroes_may_unmap: write_zeroes_may_unmap(disk),
            id: self.id_bytes(),
        }
    }
}

/// Whether a WRITE_ZEROES with `unmap` can deallocate on this disk (the
/// `write_zeroes_may_unmap` field, which the spec wants clear iff it
/// cannot).
pub fn write_zeroes_may_unmap(disk: &Disk) -> bool {
    disk.policy().discard == DiscardMode::Unmap && disk.caps().discard
}

/// What the request parser enforces for one device (or one vhost-user
/// session). Built by [`BlkOptions::limits`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLimits {
    /// Negotiated features (gates DISCARD and WRITE_ZEROES).
    pub features: Features,
    /// The disk refuses modifications (OUT → IOERR).
    pub read_only: bool,
    /// Data segments per request.
    pub seg_max: usize,
    /// Bytes per data segment, when `SIZE_MAX` was negotiated.
    pub size_max: Option<u32>,
    /// Sectors per discard segment.
    pub max_discard_sectors: u32,
    /// Discard segments per request.
    pub max_discard_seg: u32,
    /// Sectors per write-zeroes segment.
    pub max_write_zeroes_sectors: u32,
    /// Write-zeroes segments per request.
    pub max_write_zeroes_seg: u32,
    /// WRITE_ZEROES `unmap` may deallocate.
    pub write_zeroes_may_unmap: bool,
    /// GET_ID answer.
    pub id: [u8; ID_BYTES],
}

/// Builds the configuration space for `disk` under `opts`, with the live
/// write-cache state. Fields of features not offered hold their values
/// anyway (the spec only says the driver ignores them).
pub fn build_config(opts: &BlkOptions, disk: &Disk) -> VirtioBlkConfig {
    let caps = disk.caps();
    let lbs = caps.logical_block_size.max(SECTOR_SIZE as u32);
    let pbs = caps.physical_block_size.max(lbs);
    let per_phys = pbs / lbs;
    let mut c = VirtioBlkConfig::new_zeroed();
    c.capacity = (disk.size() / SECTOR_SIZE).into();
    c.size_max = opts.size_max.into();
    c.seg_max = opts.seg_max.into();
    c.blk_size = lbs.into();
    c.physical_block_exp = if per_phys.is_power_of_two() {
        per_phys.trailing_zeros() as u8
    } else {
        0
    };
    c.alignment_offset = 0;
    // The host's hints, in logical blocks: the minimum is at least one
    // physical block; the option overrides the host's optimal size.
    let min_blocks = per_phys.max(caps.io_min / lbs);
    c.min_io_size = u16::try_from(min_blocks).unwrap_or(u16::MAX).into();
    c.opt_io_size = if opts.opt_io_size != 0 {
        opts.opt_io_size
    } else {
        caps.io_opt / lbs
    }
    .into();
    c.writeback = u8::from(disk.write_cache());
    c.num_queues = opts.num_queues.into();
    c.max_discard_sectors = opts.max_discard_sectors.into();
    c.max_discard_seg = opts.max_discard_seg.into();
    c.discard_sector_alignment = ((u64::from(pbs) / SECTOR_SIZE) as u32).into();
    c.max_write_zeroes_sectors = opts.max_write_zeroes_sectors.into();
    c.max_write_zeroes_seg = opts.max_write_zeroes_seg.into();
    c.write_zeroes_may_unmap = u8::from(write_zeroes_may_unmap(disk));
    c
}

/// One row of the config-space table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigField {
    /// Field name as in the spec.
    pub name: &'static str,
    /// Byte offset.
    pub offset: usize,
    /// Size in bytes.
    pub size: usize,
    /// The feature that makes the field meaningful, if any.
    pub feature: Option<&'static str>,
    /// Whether guest writes have an effect.
    pub writable: bool,
    /// Where the value comes from.
    pub value: &'static str,
}

/// Every config field the device fills (the rest of the 96 bytes is
/// zero). Drives the config table in `docs/virtio-blk.md`.
pub fn config_fields() -> Vec<ConfigField> {
    let z = VirtioBlkConfig::new_zeroed();
    macro_rules! row {
        ($f:ident, $feat:expr, $w:expr, $v:expr) => {
            ConfigField {
                name: stringify!($f),
                offset: offset_of!(VirtioBlkConfig, $f),
                size: size_of_val(&z.$f),
                feature: $feat,
                writable: $w,
                value: $v,
            }
        };
    }
    vec![
        row!(capacity, None, false, "image size / 512"),
        row!(
            size_max,
            Some("SIZE_MAX"),
            false,
            "option `size_max` (default 1 MiB)"
        ),
        row!(
            seg_max,
            Some("SEG_MAX"),
            false,
            "option `seg_max` (default 254)"
        ),
        row!(blk_size, Some("BLK_SIZE"), false, "host logical block size"),
        row!(
            physical_block_exp,
            Some("TOPOLOGY"),
            false,
            "log2(host physical block / logical block)"
        ),
        row!(alignment_offset, Some("TOPOLOGY"), false, "0"),
        row!(
            min_io_size,
            Some("TOPOLOGY"),
            false,
            "host `queue/minimum_io_size` in logical blocks, at least one physical block"
        ),
        row!(
            opt_io_size,
            Some("TOPOLOGY"),
            false,
            "option `opt_io_size` if set, else host `queue/optimal_io_size` in logical blocks (0: none)"
        ),
        row!(
            writeback,
            Some("CONFIG_WCE"),
            true,
            "live write-cache state (`Disk::write_cache`)"
        ),
        row!(num_queues, Some("MQ"), false, "option `num_queues`"),
        row!(
            max_discard_sectors,
            Some("DISCARD"),
            false,
            "option (default 2^22 sectors)"
        ),
        row!(
            max_discard_seg,
            Some("DISCARD"),
            false,
            "option (default 32)"
        ),
        row!(
            discard_sector_alignment,
            Some("DISCARD"),
            false,
            "host physical block / 512"
        ),
        row!(
            max_write_zeroes_sectors,
            Some("WRITE_ZEROES"),
            false,
            "option (default 2^22 sectors)"
        ),
        row!(
            max_write_zeroes_seg,
            Some("WRITE_ZEROES"),
            false,
            "option (default 32)"
        ),
        row!(
            write_zeroes_may_unmap,
            Some("WRITE_ZEROES"),
            false,
            "1 iff policy `discard=unmap` and the host can discard"
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert_eq!(BlkOptions::default().validate(512), Ok(()));
        assert_eq!(BlkOptions::default().validate(4096), Ok(()));
        let o = BlkOptions {
            queue_size: 100,
            ..Default::default()
        };
        assert!(o
            .validate(512)
            .unwrap_err()
            .to_string()
            .contains("queue_size"));
        let o = BlkOptions {
            serial: vec![b'x'; 21],
            ..Default::default()
        };
        assert!(o.validate(512).is_err());
        let o = BlkOptions {
            max_discard_sectors: 9,
            ..Default::default()
        };
        assert!(o.validate(512).is_ok());
        assert!(o.validate(4096).is_err(), "not a multiple of 8 sectors");
        let o = BlkOptions {
            seg_max: 1023,
            ..Default::default()
        };
        assert!(o.validate(512).is_err());
    }

    #[test]
    fn topology_follows_the_host_io_hints() {
        use std::sync::Arc;
        use vmstor_hostio::{Disk, DiskOptions, HostCaps, NullFile, Policy};
        let disk = |min: u32, opt: u32| {
            let mut caps = HostCaps::simulated(1 << 20);
            caps.io_min = min;
            caps.io_opt = opt;
            Disk::from_host_file(
                Arc::new(NullFile::new()),
                caps,
                Policy::default(),
                DiskOptions::default(),
            )
            .unwrap()
        };
        let o = BlkOptions::default();
        // No hints: one physical block (4096 / 512), no optimal size.
        let c = build_config(&o, &disk(0, 0));
        assert_eq!((c.min_io_size.get(), c.opt_io_size.get()), (8, 0));
        // A RAID-like device: 64 KiB chunk, 1 MiB stripe.
        let c = build_config(&o, &disk(64 << 10, 1 << 20));
        assert_eq!((c.min_io_size.get(), c.opt_io_size.get()), (128, 2048));
        // A minimum below the physical block does not lower it.
        let c = build_config(&o, &disk(512, 0));
        assert_eq!(c.min_io_size.get(), 8);
        // The option wins over the host's optimal size.
        let o = BlkOptions {
            opt_io_size: 16,
            ..BlkOptions::default()
        };
        let c = build_config(&o, &disk(0, 1 << 20));
        assert_eq!(c.opt_io_size.get(), 16);
    }

    #[test]
    fn id_is_nul_padded_only_when_shorter() {
        let o = BlkOptions {
            serial: b"abc".to_vec(),
            ..Default::default()
        };
        let mut want = [0u8; 20];
        want[..3].copy_from_slice(b"abc");
        assert_eq!(o.id_bytes(), want);
        let o = BlkOptions {
            serial: b"0123456789abcdefghij".to_vec(),
            ..Default::default()
        };
        assert_eq!(&o.id_bytes(), b"0123456789abcdefghij");
    }

    #[test]
    fn field_table_is_sorted_and_non_overlapping() {
        let f = config_fields();
        for w in f.windows(2) {
            assert!(w[0].offset + w[0].size <= w[1].offset, "{}", w[1].name);
        }
        assert_eq!(f.iter().filter(|r| r.writable).count(), 1);
    }
}

//! Feature bits: what the device offers, and the one table ([`FEATURES`])
//! that drives both the offer and the documentation.
//!
//! Offer rules (see [`crate::BlkOptions::features`] for the configurable
//! ones):
//! - `VERSION_1` and `FLUSH` are always offered. Not offering FLUSH is, per
//!   the spec, how a device says it does not want to be crash-safe; vmstor
//!   always wants to be.
//! - `RO` is offered exactly when the disk is read-only; `DISCARD` and
//!   `WRITE_ZEROES` are then withdrawn (they would only ever fail).
//! - `MQ` is offered exactly when more than one queue is configured.
//! - `SIZE_MAX`, `SEG_MAX`, `BLK_SIZE`, `TOPOLOGY`, `CONFIG_WCE`, `DISCARD`,
//!   `WRITE_ZEROES`, `INDIRECT_DESC` and `EVENT_IDX` are offered by default
//!   and can each be turned off.

use bitflags::bitflags;
use virtio_bindings::virtio_blk as blk;
use virtio_bindings::virtio_config as cfg;
use virtio_bindings::virtio_ring as ring;

bitflags! {
    /// Feature bits this device knows (virtio 1.2 §5.2.3 and §6).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Features: u64 {
        /// `VIRTIO_BLK_F_SIZE_MAX`: `size_max` bounds one data segment.
        const SIZE_MAX = 1 << blk::VIRTIO_BLK_F_SIZE_MAX;
        /// `VIRTIO_BLK_F_SEG_MAX`: `seg_max` bounds the segments per request.
        const SEG_MAX = 1 << blk::VIRTIO_BLK_F_SEG_MAX;
        /// `VIRTIO_BLK_F_RO`: the disk is read-only.
        const RO = 1 << blk::VIRTIO_BLK_F_RO;
        /// `VIRTIO_BLK_F_BLK_SIZE`: `blk_size` holds the logical block size.
        const BLK_SIZE = 1 << blk::VIRTIO_BLK_F_BLK_SIZE;
        /// `VIRTIO_BLK_F_FLUSH` (legacy `VIRTIO_BLK_F_WCE`): FLUSH requests.
        const FLUSH = 1 << blk::VIRTIO_BLK_F_FLUSH;
        /// `VIRTIO_BLK_F_TOPOLOGY`: physical block and I/O size hints.
        const TOPOLOGY = 1 << blk::VIRTIO_BLK_F_TOPOLOGY;
        /// `VIRTIO_BLK_F_CONFIG_WCE`: the `writeback` field is writable.
        const CONFIG_WCE = 1 << blk::VIRTIO_BLK_F_CONFIG_WCE;
        /// `VIRTIO_BLK_F_MQ`: `num_queues` request queues.
        const MQ = 1 << blk::VIRTIO_BLK_F_MQ;
        /// `VIRTIO_BLK_F_DISCARD`: DISCARD requests.
        const DISCARD = 1 << blk::VIRTIO_BLK_F_DISCARD;
        /// `VIRTIO_BLK_F_WRITE_ZEROES`: WRITE_ZEROES requests.
        const WRITE_ZEROES = 1 << blk::VIRTIO_BLK_F_WRITE_ZEROES;
        /// `VIRTIO_RING_F_INDIRECT_DESC`: indirect descriptor tables.
        const INDIRECT_DESC = 1 << ring::VIRTIO_RING_F_INDIRECT_DESC;
        /// `VIRTIO_RING_F_EVENT_IDX`: used/avail event index suppression.
        const EVENT_IDX = 1 << ring::VIRTIO_RING_F_EVENT_IDX;
        /// `VIRTIO_F_VERSION_1`: the modern (non-legacy) interface.
        const VERSION_1 = 1 << cfg::VIRTIO_F_VERSION_1;
    }
}

impl Features {
    /// Offered whatever the options say.
    pub const ALWAYS: Features = Features::VERSION_1.union(Features::FLUSH);
    /// Offered or not by [`crate::BlkOptions::features`].
    pub const CONFIGURABLE: Features = Features::SIZE_MAX
        .union(Features::SEG_MAX)
        .union(Features::BLK_SIZE)
        .union(Features::TOPOLOGY)
        .union(Features::CONFIG_WCE)
        .union(Features::DISCARD)
        .union(Features::WRITE_ZEROES)
        .union(Features::INDIRECT_DESC)
        .union(Features::EVENT_IDX);
}

/// How a feature comes to be offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Always offered.
    Always,
    /// Offered unless turned off in the options.
    Default,
    /// Offered when a fact about the disk or options holds (the string).
    When(&'static str),
}

/// One row of [`FEATURES`].
#[derive(Debug, Clone, Copy)]
pub struct FeatureInfo {
    /// The bit.
    pub feature: Features,
    /// The spec's name.
    pub name: &'static str,
    /// When it is offered.
    pub offer: Offer,
    /// What it means for this device.
    pub meaning: &'static str,
}

/// Every feature the device can offer. Drives [`offered_features`] (through
/// [`Offer`]) and the table in `docs/virtio-blk.md`.
pub const FEATURES: &[FeatureInfo] = &[
    FeatureInfo {
        feature: Features::SIZE_MAX,
        name: "VIRTIO_BLK_F_SIZE_MAX",
        offer: Offer::Default,
        meaning: "`size_max` bounds each data segment; a longer segment gets IOERR",
    },
    FeatureInfo {
        feature: Features::SEG_MAX,
        name: "VIRTIO_BLK_F_SEG_MAX",
        offer: Offer::Default,
        meaning: "`seg_max` bounds the data segments of one request; more get IOERR",
    },
    FeatureInfo {
        feature: Features::RO,
        name: "VIRTIO_BLK_F_RO",
        offer: Offer::When("the disk is read-only"),
        meaning: "OUT gets IOERR without host I/O",
    },
    FeatureInfo {
        feature: Features::BLK_SIZE,
        name: "VIRTIO_BLK_F_BLK_SIZE",
        offer: Offer::Default,
        meaning: "`blk_size` is the image's logical block size; requests not aligned to it get IOERR",
    },
    FeatureInfo {
        feature: Features::FLUSH,
        name: "VIRTIO_BLK_F_FLUSH",
        offer: Offer::Always,
        meaning: "FLUSH requests; a driver that does not accept it gets a write-through disk",
    },
    FeatureInfo {
        feature: Features::TOPOLOGY,
        name: "VIRTIO_BLK_F_TOPOLOGY",
        offer: Offer::Default,
        meaning: "physical block exponent and minimum I/O size from the host probe, optimal I/O size from the options",
    },
    FeatureInfo {
        feature: Features::CONFIG_WCE,
        name: "VIRTIO_BLK_F_CONFIG_WCE",
        offer: Offer::Default,
        meaning: "the guest toggles the write cache through `writeback`; 1→0 flushes before taking effect",
    },
    FeatureInfo {
        feature: Features::MQ,
        name: "VIRTIO_BLK_F_MQ",
        offer: Offer::When("more than one queue is configured"),
        meaning: "`num_queues` independent request queues",
    },
    FeatureInfo {
        feature: Features::DISCARD,
        name: "VIRTIO_BLK_F_DISCARD",
        offer: Offer::Default,
        meaning: "multi-segment DISCARD (withdrawn on a read-only disk)",
    },
    FeatureInfo {
        feature: Features::WRITE_ZEROES,
        name: "VIRTIO_BLK_F_WRITE_ZEROES",
        offer: Offer::Default,
        meaning: "multi-segment WRITE_ZEROES with the UNMAP flag (withdrawn on a read-only disk)",
    },
    FeatureInfo {
        feature: Features::INDIRECT_DESC,
        name: "VIRTIO_RING_F_INDIRECT_DESC",
        offer: Offer::Default,
        meaning: "indirect descriptor tables (one level; nesting needs a reset)",
    },
    FeatureInfo {
        feature: Features::EVENT_IDX,
        name: "VIRTIO_RING_F_EVENT_IDX",
        offer: Offer::Default,
        meaning: "notification and interrupt suppression by event index",
    },
    FeatureInfo {
        feature: Features::VERSION_1,
        name: "VIRTIO_F_VERSION_1",
        offer: Offer::Always,
        meaning: "modern interface; legacy drivers are accepted (little-endian guests only)",
    },
];

/// The features offered for a disk that is `read_only`, with `num_queues`
/// queues and the configurable features `wanted`.
pub fn offered_features(wanted: Features, read_only: bool, num_queues: u16) -> Features {
    let mut f = Features::ALWAYS | (wanted & Features::CONFIGURABLE);
    if read_only {
        f |= Features::RO;
        f -= Features::DISCARD | Features::WRITE_ZEROES;
    }
    if num_queues > 1 {
        f |= Features::MQ;
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_offer_rules() {
        let mut all = Features::empty();
        for row in FEATURES {
            assert_eq!(row.feature.bits().count_ones(), 1, "{}", row.name);
            all |= row.feature;
            let configurable = Features::CONFIGURABLE.contains(row.feature);
            assert_eq!(configurable, row.offer == Offer::Default, "{}", row.name);
            assert_eq!(
                Features::ALWAYS.contains(row.feature),
                row.offer == Offer::Always,
                "{}",
                row.name
            );
        }
        assert_eq!(all, Features::all(), "every known feature has a row");
    }

    #[test]
    fn offer_follows_disk_and_options() {
        let f = offered_features(Features::CONFIGURABLE, false, 1);
        assert!(f.contains(Features::FLUSH | Features::CONFIG_WCE | Features::DISCARD));
        assert!(!f.contains(Features::RO) && !f.contains(Features::MQ));
        let ro = offered_features(Features::CONFIGURABLE, true, 4);
        assert!(ro.contains(Features::RO | Features::MQ | Features::FLUSH));
        assert!(!ro.intersects(Features::DISCARD | Features::WRITE_ZEROES));
        // FLUSH and VERSION_1 cannot be turned off.
        let none = offered_features(Features::empty(), false, 1);
        assert_eq!(none, Features::ALWAYS);
    }
}

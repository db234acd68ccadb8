//! IDENTIFY DEVICE, field by field against ACS-3 Table 45 (ATA8-ACS
//! §7.16.7), read through the data port as a guest would, plus the checks
//! Linux libata makes on the same words (`include/linux/ata.h`).

use super::*;
use crate::ide::ControllerConfig;
use crate::identify::IdentifyData;
use crate::testing::{SparseFile, Tf};
use crate::DeviceConfig;
use vmstor_hostio::{DiskOptions, Fact, GuestDriver, HostCaps};

/// What libata concludes from the words (facts from `include/linux/ata.h`).
struct LinuxView {
    lba48: bool,
    flush: bool,
    flush_ext: bool,
    wcache_supported: bool,
    wcache_enabled: bool,
    fua: bool,
    trim: bool,
    major: u32,
}

fn linux(id: &IdentifyData) -> LinuxView {
    let valid83 = id.word(83) & 0xc000 == 0x4000;
    let valid84 = id.word(84) & 0xc000 == 0x4000;
    let major = 15 - (id.word(80) | 1).leading_zeros();
    LinuxView {
        lba48: valid83 && id.bit(83, 10),
        flush: valid83 && id.bit(83, 12),
        flush_ext: valid83 && id.bit(83, 13),
        wcache_supported: valid83 && id.bit(82, 5),
        wcache_enabled: valid83 && id.bit(85, 5),
        fua: valid84 && id.bit(84, 6),
        trim: major >= 7 && id.bit(169, 0),
        major,
    }
}

fn identify(d: &mut IdeDriver) -> IdentifyData {
    let o = d.identify();
    assert!(o.ok(), "{o:?}");
    assert_eq!(o.irqs, 1, "one interrupt before the data block");
    d.identify_data().clone()
}

#[test]
fn default_disk_word_by_word() {
    let (_f, mut d) = setup(CacheMode::Writeback);
    let id = identify(&mut d);
    assert!(id.checksum_ok());
    assert_eq!(id.word(255) & 0xff, 0xa5);
    assert_eq!(id.word(0), 0x0040, "ATA device, fixed");
    assert_eq!(id.string(27, 40), "vmstor ATA disk");
    assert_eq!(id.string(10, 20), "VMSTOR-0000");
    assert_eq!(id.string(23, 8), env!("CARGO_PKG_VERSION"));
    assert_eq!(id.word(47), 0x8010, "80h + max 16 sectors per DRQ block");
    assert_eq!(id.word(48), 0x4000);
    assert_eq!(id.word(49), 0x0f00, "IORDY, IORDY disable, LBA, DMA");
    assert_eq!(id.word(50), 0x4000);
    assert_eq!(id.word(53), 0x0007);
    assert_eq!(id.word(59), 0x0110, "multiple valid, 16 sectors");
    let lba28 = u32::from(id.word(60)) | u32::from(id.word(61)) << 16;
    assert_eq!(u64::from(lba28), SECTORS);
    let lba48 = (0..4).fold(0u64, |a, i| a | u64::from(id.word(100 + i)) << (16 * i));
    assert_eq!(lba48, SECTORS);
    // PIIX4: MWDMA 0-2, UDMA 0-2 supported, UDMA 2 selected, PIO 3-4.
    assert_eq!(id.word(63), 0x0007);
    assert_eq!(id.word(64), 0x0003);
    assert_eq!(id.word(88), 0x0407);
    assert_eq!(id.word(80), 0x01f0);
    assert_eq!(id.word(82), 1 << 14 | 1 << 6 | 1 << 5 | 1 << 3);
    assert_eq!(id.word(83), 0x4000 | 1 << 13 | 1 << 12 | 1 << 10);
    assert_eq!(id.word(84), 0x4000 | 1 << 6);
    assert_eq!(id.word(85), 1 << 14 | 1 << 6 | 1 << 5 | 1 << 3);
    assert_eq!(id.word(86), 1 << 13 | 1 << 12 | 1 << 10);
    assert_eq!(id.word(87), 0x4000 | 1 << 6);
    assert_eq!(id.word(93), 0x4001, "no 80-conductor cable below UDMA 3");
    // Simulated host: 512-byte logical, 4096-byte physical, SSD.
    assert_eq!(id.word(106), 0x6003, "8 logical per physical");
    assert_eq!(id.word(209), 0x4000);
    assert_eq!((id.word(117), id.word(118)), (0, 0));
    assert_eq!(id.word(217), 1, "non-rotating");
    assert_eq!(id.word(169), 0, "no TRIM with discard=ignore");
    assert_eq!(id.word(105), 0);
    let l = linux(&id);
    assert!(l.lba48 && l.flush && l.flush_ext && l.fua && !l.trim);
    assert!(l.wcache_supported && l.wcache_enabled);
    assert_eq!(l.major, 8);
}

#[test]
fn write_cache_word_85_is_live() {
    let (_f, mut d) = setup(CacheMode::Writethrough);
    let id = identify(&mut d);
    assert!(id.bit(82, 5), "write cache supported even when off");
    assert!(!id.bit(85, 5), "writethrough: cache reported off");
    assert!(!linux(&id).wcache_enabled);
    assert!(d.set_write_cache(true).unwrap().status.is_ok());
    assert!(identify(&mut d).bit(85, 5));
    assert!(d.disk().write_cache());
    assert!(d.set_write_cache(false).unwrap().status.is_ok());
    let id = identify(&mut d);
    assert!(!id.bit(85, 5));
    assert!(id.checksum_ok());
}

#[test]
fn trim_word_169_follows_discard_policy() {
    let mut p = Policy::from_mode(CacheMode::None);
    p.discard = vmstor_hostio::DiscardMode::Unmap;
    let (_f, mut d) = setup_policy(p);
    let id = identify(&mut d);
    assert_eq!(id.word(169), 1);
    assert_eq!(id.word(105), crate::device::MAX_DSM_BLOCKS);
    assert!(id.bit(49, 8));
    assert!(linux(&id).trim);
    // Read-only disks do not advertise TRIM.
    p.read_only = true;
    let (_f, mut d) = setup_policy(p);
    assert_eq!(identify(&mut d).word(169), 0);
}

#[test]
fn transfer_modes_match_the_controller() {
    let (_f, disk) = mem_disk(DISK, Policy::default());
    let mut d = IdeDriver::with_config(disk, ControllerConfig::piix3(), DeviceConfig::default());
    let id = identify(&mut d);
    assert_eq!(id.word(88), 0, "PIIX3 has no Ultra DMA");
    assert_eq!(id.word(63), 0x0407, "MWDMA 0-2, MWDMA 2 selected");
    // SET FEATURES 03h: MWDMA 1.
    let sf = |mode: u16| Tf {
        features: 0x03,
        count: mode,
        ..Tf::default()
    };
    assert!(d.non_data(0xef, &sf(0x21)).ok());
    assert_eq!(identify(&mut d).word(63), 0x0207);
    // UDMA on PIIX3, MWDMA 3, PIO 5: aborted, selection unchanged.
    for bad in [0x40, 0x23, 0x0d, 0x10, 0x02] {
        let o = d.non_data(0xef, &sf(bad));
        assert_eq!(o.error, crate::regs::AtaError::ABRT, "mode {bad:#x}");
    }
    assert_eq!(identify(&mut d).word(63), 0x0207);
    // PIO modes are accepted (no IDENTIFY bits).
    for ok in [0x00, 0x01, 0x0c, 0x08] {
        assert!(d.non_data(0xef, &sf(ok)).ok(), "mode {ok:#x}");
    }

    let (_f, disk) = mem_disk(DISK, Policy::default());
    let mut d = IdeDriver::with_config(disk, ControllerConfig::piix4(), DeviceConfig::default());
    assert!(d.non_data(0xef, &sf(0x41)).ok());
    let id = identify(&mut d);
    assert_eq!(id.word(88), 0x0207, "UDMA 1 selected");
    assert_eq!(id.word(63), 0x0007, "no MWDMA selected with UDMA");
    assert!(!d.non_data(0xef, &sf(0x43)).ok(), "UDMA 3 beyond PIIX4");
    assert!(d.non_data(0xef, &sf(0x22)).ok());
    let id = identify(&mut d);
    assert_eq!((id.word(63), id.word(88)), (0x0407, 0x0007));
}

#[test]
fn look_ahead_word_85_bit_6() {
    let (_f, mut d) = setup(CacheMode::Writeback);
    let sf = |code: u16| Tf {
        features: code,
        ..Tf::default()
    };
    assert!(d.non_data(0xef, &sf(0x55)).ok());
    let id = identify(&mut d);
    assert!(id.bit(82, 6) && !id.bit(85, 6));
    assert!(d.non_data(0xef, &sf(0xaa)).ok());
    assert!(identify(&mut d).bit(85, 6));
}

fn sparse_driver(size: u64, caps: impl FnOnce(&mut HostCaps)) -> (Arc<SparseFile>, IdeDriver) {
    let f = SparseFile::new(size);
    let mut c = HostCaps::simulated(size);
    caps(&mut c);
    let disk = Disk::from_host_file(
        f.clone(),
        c,
        Policy::default(),
        DiskOptions {
            trace: true,
            ..Default::default()
        },
    )
    .unwrap();
    (f, IdeDriver::new(Arc::new(disk)))
}

#[test]
fn large_disk_capacity_words() {
    // 2^28 + 5000 sectors: words 60-61 saturate at 0FFFFFFFh.
    let sectors = (1u64 << 28) + 5000;
    let (_f, mut d) = sparse_driver(sectors * 512, |_| {});
    let id = identify(&mut d);
    assert_eq!((id.word(60), id.word(61)), (0xffff, 0x0fff));
    let lba48 = (0..4).fold(0u64, |a, i| a | u64::from(id.word(100 + i)) << (16 * i));
    assert_eq!(lba48, sectors);
    assert_eq!((id.word(1), id.word(3), id.word(6)), (16383, 16, 63));
    assert_eq!(d.capacity(), sectors);
}

#[test]
fn four_k_logical_sectors() {
    let (_f, mut d) = sparse_driver(64 << 20, |c| {
        c.logical_block_size = 4096;
        c.physical_block_size = 4096;
        c.dio_offset_align = 4096;
        c.rotational = Fact::Known(true, "test");
    });
    let id = identify(&mut d);
    assert_eq!(id.word(106), 0x5000, "logical sector longer than 256 words");
    assert_eq!(
        u32::from(id.word(117)) | u32::from(id.word(118)) << 16,
        2048
    );
    assert_eq!(id.word(209), 0);
    assert_eq!(id.word(217), 0, "rotating: rate not reported");
    assert_eq!(d.block_size(), 4096);
    assert_eq!(d.capacity(), (64 << 20) / 4096);
    // A 4 KiB-sector round trip by DMA and by PIO (DRQ block = 1 sector).
    let data = pattern(3 * 4096, 4);
    assert!(GuestDriver::write(&mut d, 5, &data, true)
        .unwrap()
        .status
        .is_ok());
    let o = d.pio_in(0x24, &lba48(5, 3), 4096, 3 * 4096);
    assert!(o.ok() && o.data == data);
    let o = d.pio_out(0x34, &lba48(9, 1), 4096, &data[..4096]);
    assert!(o.ok());
    let mut out = Vec::new();
    GuestDriver::read(&mut d, 9, 1, &mut out).unwrap();
    assert!(out == data[..4096]);
}

#[test]
fn rotational_unknown_reports_zero() {
    let (_f, mut d) = sparse_driver(1 << 20, |c| {
        c.rotational = Fact::Unknown("test".into());
        c.physical_block_size = 512;
    });
    let id = identify(&mut d);
    assert_eq!(id.word(217), 0);
    assert_eq!(id.word(106), 0, "512/512: word 106 not used");
}

#[test]
fn strings_are_byte_swapped_and_padded() {
    let (_f, disk) = mem_disk(DISK, Policy::default());
    let cfg = DeviceConfig {
        model: "QEMU HARDDISK".into(),
        serial: "ABCDEFGHIJKLMNOPQRSTUVWXYZ".into(),
        firmware: "2.5+".into(),
        ..DeviceConfig::default()
    };
    let mut d = IdeDriver::with_config(disk, ControllerConfig::piix4(), cfg);
    let id = identify(&mut d);
    assert_eq!(id.word(27), u16::from_be_bytes(*b"QE"));
    assert_eq!(id.word(46), u16::from_be_bytes(*b"  "));
    assert_eq!(id.string(10, 20), "ABCDEFGHIJKLMNOPQRST", "truncated to 20");
    assert_eq!(id.string(23, 8), "2.5+");
}

//! Data transfers through the registers: PIO (16/32-bit, single and
//! multiple), DMA, CHS addressing, and the GuestDriver round trip.

use super::*;
use crate::regs::Status;
use vmstor_hostio::GuestDriver;

#[test]
fn probe_reads_signature_and_identify() {
    let (_f, mut d) = setup(CacheMode::Writeback);
    // After the probe's SRST the signature is in the task file... the
    // IDENTIFY that followed overwrote nothing but the data phase.
    d.devctl(crate::regs::DeviceControl::SRST);
    assert!(
        d.alt_status().contains(Status::BSY),
        "BSY while SRST is set"
    );
    d.devctl(crate::regs::DeviceControl::empty());
    assert_eq!(
        (d.inb(2), d.inb(3), d.inb(4), d.inb(5), d.inb(6)),
        (1, 1, 0, 0, 0),
        "ATA signature"
    );
    assert_eq!(d.inb(1), 0x01, "diagnostic code: passed");
    assert_eq!(d.alt_status(), Status::DRDY | Status::DSC);
    assert!(d.identify().ok());
    assert!(d.identify_data().checksum_ok());
    assert_eq!(d.capacity(), SECTORS);
    assert_eq!(d.block_size(), 512);
}

#[test]
fn pio_write_then_read_16_and_32_bit() {
    for pio32 in [false, true] {
        let (f, mut d) = setup(CacheMode::Writeback);
        d.pio32 = pio32;
        let data = pattern(3 * 512, 7);
        let o = d.pio_out(0x30, &lba28(10, 3), 512, &data);
        assert!(o.ok(), "{o:?}");
        assert!(f.contents()[10 * 512..13 * 512] == data[..]);
        // 3 DRQ blocks: interrupts after blocks 1 and 2, and at completion.
        assert_eq!(o.irqs, 3);
        let o = d.pio_in(0x20, &lba28(10, 3), 512, 3 * 512);
        assert!(o.ok(), "{o:?}");
        assert!(o.data == data);
        // One interrupt before each DRQ block, none at the end.
        assert_eq!(o.irqs, 3);
        let o = d.pio_in(0x24, &lba48(10, 3), 512, 3 * 512);
        assert!(o.data == data);
    }
}

#[test]
fn pio_multiple_uses_set_multiple_block_size() {
    let (f, mut d) = setup(CacheMode::Writeback);
    // Power-on multiple count is 16 (word 59).
    assert_eq!(d.identify_data().word(59), 0x0110);
    let o = d.non_data(0xc6, &lba28(0, 4));
    assert!(o.ok());
    d.identify();
    assert_eq!(d.identify_data().word(59), 0x0104);
    let data = pattern(10 * 512, 3);
    // 10 sectors in blocks of 4: 4, 4, 2.
    let o = d.pio_out(0xc5, &lba28(100, 10), 4 * 512, &data);
    assert!(o.ok(), "{o:?}");
    assert_eq!(o.irqs, 3);
    assert!(f.contents()[100 * 512..110 * 512] == data[..]);
    let o = d.pio_in(0xc4, &lba28(100, 10), 4 * 512, 10 * 512);
    assert!(o.data == data);
    assert_eq!(o.irqs, 3, "one interrupt per DRQ block");
    let o = d.pio_in(0x29, &lba48(100, 10), 4 * 512, 10 * 512);
    assert!(
        o.data == data,
        "{:?} {:?} {}",
        o.status,
        o.error,
        o.data.len()
    );
    let o = d.pio_out(0x39, &lba48(200, 10), 4 * 512, &data);
    assert!(o.ok());
    assert!(f.contents()[200 * 512..210 * 512] == data[..]);
    // Invalid sizes are aborted; 0 disables multiple mode.
    for bad in [3u16, 32, 255] {
        assert!(!d.non_data(0xc6, &lba28(0, bad)).ok());
    }
    assert!(d.non_data(0xc6, &lba28(0, 0)).ok());
    let o = d.pio_in(0xc4, &lba28(0, 1), 512, 512);
    assert_eq!(
        o.error,
        crate::regs::AtaError::ABRT,
        "multiple mode disabled"
    );
}

#[test]
fn dma_write_then_read() {
    let (f, mut d) = setup(CacheMode::Writeback);
    for (wr, rd, tf) in [
        (0xca, 0xc8, lba28(64, 200)),
        (0x35, 0x25, lba48(1000, 300)),
        (0xcb, 0xc9, lba28(5000, 1)),
    ] {
        let data = pattern(usize::from(tf.count) * 512, wr);
        d.fill_buffer(&data);
        let o = d.dma(wr, &tf, data.len(), false);
        assert!(o.ok(), "{o:?}");
        assert_eq!(o.irqs, 1);
        // Table exactly as long as the transfer: Active clear, Interrupt set.
        assert_eq!(o.bm_status & 0x07, 0x04);
        let off = tf.lba as usize * 512;
        assert!(f.contents()[off..off + data.len()] == data[..]);
        d.fill_buffer(&vec![0; data.len()]);
        let o = d.dma(rd, &tf, data.len(), true);
        assert!(o.ok(), "{o:?}");
        assert!(o.data == data);
    }
}

#[test]
fn dma_count_zero_means_256_and_65536() {
    let (_f, mut d) = setup(CacheMode::Writeback);
    // LBA28 count 0 = 256 sectors = 128 KiB.
    let o = d.dma(0xc8, &lba28(0, 0), 256 * 512, true);
    assert!(o.ok(), "{o:?}");
    assert_eq!(o.bm_status & 0x07, 0x04, "PRD matched 256 sectors exactly");
    // LBA48 count 0 = 65536 sectors = 32 MiB: beyond this 8 MiB disk.
    let o = d.dma(0x25, &lba48(0, 0), 1 << 20, true);
    assert_eq!(o.error, crate::regs::AtaError::IDNF);
}

#[test]
fn chs_addressing() {
    let (f, mut d) = setup(CacheMode::Writeback);
    // Default geometry: 16 heads, 63 sectors per track.
    let id = d.identify_data();
    assert_eq!((id.word(3), id.word(6)), (16, 63));
    assert_eq!(id.word(1), (SECTORS / (16 * 63)) as u16);
    // C/H/S = 2/3/4 → LBA (2*16 + 3) * 63 + 3 = 2208.
    let tf = Tf {
        count: 1,
        lba: 4 | 2 << 8,
        chs: true,
        head: 3,
        ..Tf::default()
    };
    let data = pattern(512, 9);
    assert!(d.pio_out(0x30, &tf, 512, &data).ok());
    assert!(f.contents()[2208 * 512..2209 * 512] == data[..]);
    // Sector 0 and head >= heads are invalid.
    let bad = Tf { lba: 2 << 8, ..tf };
    assert_eq!(
        d.pio_in(0x20, &bad, 512, 512).error,
        crate::regs::AtaError::IDNF
    );
    // INITIALIZE DEVICE PARAMETERS: 4 heads, 32 sectors per track.
    let init = Tf {
        count: 32,
        head: 3,
        chs: true,
        ..Tf::default()
    };
    assert!(d.non_data(0x91, &init).ok());
    d.identify();
    let id = d.identify_data();
    assert_eq!((id.word(55), id.word(56)), (4, 32));
    assert_eq!(id.word(54), (SECTORS / 128) as u16);
    let cap = u32::from(id.word(57)) | u32::from(id.word(58)) << 16;
    assert_eq!(u64::from(cap), SECTORS / 128 * 128);
    // Now C/H/S 1/1/1 → (1*4 + 1) * 32 = 160.
    let tf = Tf {
        count: 1,
        lba: 1 | 1 << 8,
        chs: true,
        head: 1,
        ..Tf::default()
    };
    let o = d.pio_in(0x20, &tf, 512, 512);
    assert!(o.data == f.contents()[160 * 512..161 * 512]);
    // Zero sectors per track is aborted.
    let init = Tf { count: 0, ..init };
    assert!(!d.non_data(0x91, &init).ok());
}

#[test]
fn guest_driver_round_trip() {
    let (f, mut d) = setup(CacheMode::Writeback);
    let data = pattern(3 << 20, 1);
    let lba = 17;
    let w = GuestDriver::write(&mut d, lba, &data, false).unwrap();
    assert!(w.status.is_ok());
    // 3 MiB through a 1 MiB buffer: three commands.
    assert_eq!(w.commands, vec!["WRITE DMA EXT"; 3]);
    assert!(f.contents()[17 * 512..17 * 512 + data.len()] == data[..]);
    let mut out = Vec::new();
    let r = GuestDriver::read(&mut d, lba, (data.len() / 512) as u32, &mut out).unwrap();
    assert!(r.status.is_ok());
    assert!(out == data);
    let w = GuestDriver::write(&mut d, 0, &data[..4096], true).unwrap();
    assert_eq!(w.commands, vec!["WRITE DMA FUA EXT"]);
    assert_eq!(
        GuestDriver::flush(&mut d).unwrap().commands,
        vec!["FLUSH CACHE EXT"]
    );
    assert!(d.write_cache().unwrap());
    let off = d.set_write_cache(false).unwrap();
    assert!(off.status.is_ok());
    assert!(!d.write_cache().unwrap());
    assert!(d.set_write_cache(true).unwrap().status.is_ok());
    assert!(d.write_cache().unwrap());
    assert!(d.write_zeroes(0, 1, false).is_err());
    // Discard policy ignore: TRIM is not advertised.
    let e = d.discard(0, 8).unwrap_err();
    assert!(e.why.contains("169"), "{e}");
    let r = GuestDriver::reset(&mut d).unwrap();
    assert!(r.status.is_ok());
}

#[test]
fn guest_driver_discard_with_unmap() {
    let mut p = Policy::from_mode(CacheMode::Writeback);
    p.discard = vmstor_hostio::DiscardMode::Unmap;
    let (f, mut d) = setup_policy(p);
    let data = pattern(512 * 300, 5);
    GuestDriver::write(&mut d, 0, &data, false).unwrap();
    d.disk().trace().take();
    let r = d.discard(10, 100).unwrap();
    assert!(r.status.is_ok(), "{r:?}");
    assert_eq!(r.commands, vec!["DATA SET MANAGEMENT (TRIM)"]);
    let c = f.contents();
    assert!(c[10 * 512..110 * 512].iter().all(|b| *b == 0));
    assert!(c[..10 * 512] == data[..10 * 512]);
    assert!(c[110 * 512..300 * 512] == data[110 * 512..]);
    let o = ops(d.disk());
    assert_eq!(
        o.iter()
            .filter(|o| matches!(
                o,
                HostOp::PunchHole {
                    offset: 5120,
                    len: 51200
                }
            ))
            .count(),
        1,
        "{o:?}"
    );
}

#[test]
fn pio_read_of_large_command_is_chunked_and_correct() {
    // 12000 sectors = ~5.9 MiB > the 4 MiB PIO chunk.
    let (f, mut d) = setup(CacheMode::Writeback);
    let data = pattern(12000 * 512, 11);
    f.poke(0, &data);
    d.non_data(0xc6, &lba28(0, 16));
    d.pio32 = true;
    let o = d.pio_in(0x29, &lba48(0, 12000), 16 * 512, 12000 * 512);
    assert!(o.ok(), "{:?}", o.status);
    assert_eq!(o.data.len(), data.len());
    assert!(o.data == data);
    let reads: Vec<_> = ops(d.disk())
        .into_iter()
        .filter_map(|o| match o {
            HostOp::Read { offset, len, .. } => Some((offset, len)),
            _ => None,
        })
        .collect();
    assert_eq!(
        reads,
        vec![(0, 4 << 20), (4 << 20, 12000 * 512 - (4 << 20))]
    );
}

//! Task-file registers: the Status, Error and Device Control bits and the
//! command-block register file with its 48-bit "previous content" (HOB)
//! copies (ATA/ATAPI-6 §7; ACS-3 §6 "Normal and Error Outputs").

use bitflags::bitflags;

bitflags! {
    /// Status (and Alternate Status) register (ATA/ATAPI-6 §7.15).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Status: u8 {
        /// BSY: the device owns the task file.
        const BSY = 0x80;
        /// DRDY: the device accepts commands.
        const DRDY = 0x40;
        /// DF: device fault.
        const DF = 0x20;
        /// DSC (obsolete "device seek complete"; ACS: deferred write error).
        /// Set with DRDY on completion as drives and QEMU traditionally do.
        const DSC = 0x10;
        /// DRQ: the device is ready to transfer a data block.
        const DRQ = 0x08;
        /// CORR (obsolete).
        const CORR = 0x04;
        /// IDX (obsolete).
        const IDX = 0x02;
        /// ERR: the Error register holds the cause.
        const ERR = 0x01;
    }
}

bitflags! {
    /// Error register (ATA/ATAPI-6 §7.9; ACS-3 §6.2).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct AtaError: u8 {
        /// ICRC: interface CRC error (Ultra DMA).
        const ICRC = 0x80;
        /// UNC: uncorrectable data error.
        const UNC = 0x40;
        /// MC: media changed (obsolete).
        const MC = 0x20;
        /// IDNF: the address is outside the accessible range.
        const IDNF = 0x10;
        /// MCR: media change request (obsolete).
        const MCR = 0x08;
        /// ABRT: command aborted (unsupported, invalid parameter, or
        /// another error with no better bit).
        const ABRT = 0x04;
        /// NM / TK0NF (obsolete).
        const NM = 0x02;
        /// AMNF (obsolete); after reset or EXECUTE DEVICE DIAGNOSTIC it is
        /// the diagnostic code "device 0 passed".
        const AMNF = 0x01;
    }
}

bitflags! {
    /// Device Control register (ATA/ATAPI-6 §7.8).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct DeviceControl: u8 {
        /// HOB: reads of the command block return the previous content.
        const HOB = 0x80;
        /// SRST: software reset of both devices on the channel.
        const SRST = 0x04;
        /// nIEN: the selected device's INTRQ is not driven.
        const NIEN = 0x02;
    }
}

/// Device register bit 6: LBA addressing (CHS when clear).
pub const DEVICE_LBA: u8 = 0x40;
/// Device register bit 4: device 1 selected.
pub const DEVICE_DEV: u8 = 0x10;

/// A command-block register, by its offset in the command block
/// (ATA/ATAPI-6 Table 9; offset 0 is the data port, handled separately).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reg {
    /// Offset 1: Error (read) / Features (write).
    ErrorFeatures,
    /// Offset 2: Sector Count.
    Count,
    /// Offset 3: LBA Low (Sector Number).
    LbaLow,
    /// Offset 4: LBA Mid (Cylinder Low).
    LbaMid,
    /// Offset 5: LBA High (Cylinder High).
    LbaHigh,
    /// Offset 6: Device/Head.
    Device,
    /// Offset 7: Status (read) / Command (write).
    StatusCommand,
}

impl Reg {
    /// The register at `offset` within the command block (1..=7).
    pub fn from_offset(offset: u64) -> Option<Reg> {
        Some(match offset {
            1 => Reg::ErrorFeatures,
            2 => Reg::Count,
            3 => Reg::LbaLow,
            4 => Reg::LbaMid,
            5 => Reg::LbaHigh,
            6 => Reg::Device,
            7 => Reg::StatusCommand,
            _ => return None,
        })
    }
}

/// The command-block inputs and outputs of one device: current values and
/// the previous values a 48-bit command reads as the high-order bytes
/// (ATA/ATAPI-6 §6.20 "48-bit Address feature set": each register is a
/// two-deep FIFO).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskFile {
    /// Features (7:0).
    pub features: u8,
    /// Count (7:0).
    pub count: u8,
    /// LBA (7:0).
    pub lba_low: u8,
    /// LBA (15:8).
    pub lba_mid: u8,
    /// LBA (23:16).
    pub lba_high: u8,
    /// Device/Head.
    pub device: u8,
    /// Features (15:8).
    pub hob_features: u8,
    /// Count (15:8).
    pub hob_count: u8,
    /// LBA (31:24).
    pub hob_lba_low: u8,
    /// LBA (39:32).
    pub hob_lba_mid: u8,
    /// LBA (47:40).
    pub hob_lba_high: u8,
}

impl TaskFile {
    /// A host write of `v` to `reg`: the old value moves to the HOB copy.
    /// `Device` has no HOB copy; `StatusCommand` is not a task-file write.
    pub fn write(&mut self, reg: Reg, v: u8) {
        fn push(cur: &mut u8, hob: &mut u8, v: u8) {
            *hob = *cur;
            *cur = v;
        }
        match reg {
            Reg::ErrorFeatures => push(&mut self.features, &mut self.hob_features, v),
            Reg::Count => push(&mut self.count, &mut self.hob_count, v),
            Reg::LbaLow => push(&mut self.lba_low, &mut self.hob_lba_low, v),
            Reg::LbaMid => push(&mut self.lba_mid, &mut self.hob_lba_mid, v),
            Reg::LbaHigh => push(&mut self.lba_high, &mut self.hob_lba_high, v),
            Reg::Device => self.device = v,
            Reg::StatusCommand => {}
        }
    }

    /// The 48-bit LBA (current bytes low, HOB bytes high).
    pub fn lba48(&self) -> u64 {
        u64::from(self.lba_low)
            | u64::from(self.lba_mid) << 8
            | u64::from(self.lba_high) << 16
            | u64::from(self.hob_lba_low) << 24
            | u64::from(self.hob_lba_mid) << 32
            | u64::from(self.hob_lba_high) << 40
    }

    /// The 28-bit LBA (Device bits 3:0 are LBA 27:24).
    pub fn lba28(&self) -> u64 {
        u64::from(self.lba_low)
            | u64::from(self.lba_mid) << 8
            | u64::from(self.lba_high) << 16
            | u64::from(self.device & 0x0f) << 24
    }

    /// The 16-bit count of a 48-bit command.
    pub fn count16(&self) -> u16 {
        u16::from(self.count) | u16::from(self.hob_count) << 8
    }

    /// The 16-bit features of a 48-bit command.
    pub fn features16(&self) -> u16 {
        u16::from(self.features) | u16::from(self.hob_features) << 8
    }

    /// Stores a 48-bit LBA as a device output (current and HOB bytes).
    pub fn set_lba48(&mut self, lba: u64) {
        self.lba_low = lba as u8;
        self.lba_mid = (lba >> 8) as u8;
        self.lba_high = (lba >> 16) as u8;
        self.hob_lba_low = (lba >> 24) as u8;
        self.hob_lba_mid = (lba >> 32) as u8;
        self.hob_lba_high = (lba >> 40) as u8;
    }

    /// Stores a 28-bit LBA as a device output (Device bits 3:0 = LBA 27:24).
    pub fn set_lba28(&mut self, lba: u64) {
        self.lba_low = lba as u8;
        self.lba_mid = (lba >> 8) as u8;
        self.lba_high = (lba >> 16) as u8;
        self.device = (self.device & 0xf0) | ((lba >> 24) as u8 & 0x0f);
    }

    /// The ATA device signature after reset or EXECUTE DEVICE DIAGNOSTIC
    /// (ATA/ATAPI-6 §9.12: Count 01h, LBA Low 01h, LBA Mid 00h, LBA High
    /// 00h, Device 00h).
    pub fn signature() -> TaskFile {
        TaskFile {
            count: 1,
            lba_low: 1,
            ..TaskFile::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hob_fifo_and_lba_assembly() {
        let mut tf = TaskFile::default();
        for (reg, hi, lo) in [
            (Reg::LbaLow, 0x44, 0x11),
            (Reg::LbaMid, 0x55, 0x22),
            (Reg::LbaHigh, 0x66, 0x33),
            (Reg::Count, 0x01, 0x02),
        ] {
            tf.write(reg, hi);
            tf.write(reg, lo);
        }
        tf.write(Reg::Device, 0x4a);
        assert_eq!(tf.lba48(), 0x6655_4433_2211);
        assert_eq!(tf.lba28(), 0x0a33_2211);
        assert_eq!(tf.count16(), 0x0102);
        let mut out = TaskFile::default();
        out.set_lba48(0xabcd_ef01_2345);
        assert_eq!(out.lba48(), 0xabcd_ef01_2345);
        out.device = 0xe0;
        out.set_lba28(0x0fff_ffff);
        assert_eq!(out.lba28(), 0x0fff_ffff);
        assert_eq!(out.device, 0xef);
    }
}

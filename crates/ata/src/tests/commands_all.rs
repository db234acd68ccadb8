//! Every command in the table, executed through the registers with its own
//! expectation (the `match` is exhaustive over `Action`, so a new command
//! kind cannot be added without a test), plus every SET FEATURES
//! subcommand.

use super::*;
use crate::commands::{Action, Protocol, COMMANDS, SET_FEATURES};
use crate::regs::{AtaError, Status};

fn tf_for(c: &crate::CommandDesc, lba: u64, count: u16) -> Tf {
    Tf {
        lba,
        count,
        lba48: c.addressing == crate::commands::Addressing::Lba48,
        ..Tf::default()
    }
}

#[test]
fn every_command_does_what_the_table_says() {
    let mut p = Policy::from_mode(CacheMode::Writeback);
    p.discard = vmstor_hostio::DiscardMode::Unmap;
    for c in COMMANDS {
        let (f, mut d) = setup_policy(p);
        let id = d.identify_data().clone();
        for bit in c.claims {
            assert!(id.bit(bit.word, bit.bit), "{} claims {bit:?}", c.name);
        }
        let name = c.name;
        match c.action {
            Action::Nop => {
                let o = d.non_data(c.opcode, &Tf::default());
                assert_eq!(o.error, AtaError::ABRT, "{name}");
            }
            Action::DataSetManagement => {
                f.poke(512 * 20, &[7; 512 * 4]);
                let mut payload = vec![0u8; 512];
                payload[..8].copy_from_slice(&(20u64 | 4 << 48).to_le_bytes());
                d.fill_buffer(&payload);
                let o = d.dma(
                    c.opcode,
                    &Tf {
                        features: 1,
                        ..tf_for(c, 0, 1)
                    },
                    512,
                    false,
                );
                assert!(o.ok(), "{name}: {o:?}");
                assert!(f.contents()[512 * 20..512 * 24].iter().all(|b| *b == 0));
                assert!(ops(d.disk()).contains(&HostOp::PunchHole {
                    offset: 512 * 20,
                    len: 2048
                }));
            }
            Action::Recalibrate | Action::InitializeDeviceParameters => {
                let o = d.non_data(
                    c.opcode,
                    &Tf {
                        count: 63,
                        head: 15,
                        chs: true,
                        ..Tf::default()
                    },
                );
                assert!(o.ok() && o.irqs == 1, "{name}: {o:?}");
            }
            Action::Read => {
                let data = pattern(8 * 512, c.opcode);
                f.poke(512 * 30, &data);
                let tf = tf_for(c, 30, 8);
                let o = match c.protocol {
                    Protocol::PioIn => {
                        let block = if c.multiple { 16 * 512 } else { 512 };
                        d.pio_in(c.opcode, &tf, block, data.len())
                    }
                    Protocol::DmaIn => d.dma(c.opcode, &tf, data.len(), true),
                    p => panic!("{name}: read with {p:?}"),
                };
                assert!(o.ok(), "{name}: {o:?}");
                assert!(o.data == data, "{name}");
                let reads = ops(d.disk())
                    .iter()
                    .filter(|o| {
                        matches!(
                            o,
                            HostOp::Read {
                                offset: 15360,
                                len: 4096,
                                ..
                            }
                        )
                    })
                    .count();
                assert_eq!(reads, 1, "{name}: one host read");
            }
            Action::Write => {
                let data = pattern(8 * 512, c.opcode);
                let tf = tf_for(c, 40, 8);
                let o = match c.protocol {
                    Protocol::PioOut => {
                        let block = if c.multiple { 16 * 512 } else { 512 };
                        d.pio_out(c.opcode, &tf, block, &data)
                    }
                    Protocol::DmaOut => {
                        d.fill_buffer(&data);
                        d.dma(c.opcode, &tf, data.len(), false)
                    }
                    p => panic!("{name}: write with {p:?}"),
                };
                assert!(o.ok(), "{name}: {o:?}");
                assert!(f.contents()[512 * 40..512 * 48] == data[..], "{name}");
                assert_eq!(
                    writes(&ops(d.disk())),
                    vec![(512 * 40, 4096, c.fua)],
                    "{name}: one host write, RWF_DSYNC iff FUA"
                );
            }
            Action::ReadVerify => {
                let o = d.non_data(c.opcode, &tf_for(c, 50, 16));
                assert!(o.ok() && o.irqs == 1, "{name}: {o:?}");
                assert!(ops(d.disk()).contains(&HostOp::Read {
                    offset: 512 * 50,
                    len: 8192,
                    into: vmstor_hostio::BufRef::Request
                }));
            }
            Action::Seek => {
                assert!(
                    d.non_data(c.opcode, &tf_for(c, SECTORS - 1, 0)).ok(),
                    "{name}"
                );
                assert_eq!(
                    d.non_data(c.opcode, &tf_for(c, SECTORS, 1)).error,
                    AtaError::IDNF
                );
            }
            Action::ExecuteDiagnostic => {
                d.outb(2, 9);
                let o = d.non_data(c.opcode, &Tf::default());
                assert!(o.ok() && o.irqs == 1, "{name}: {o:?}");
                assert_eq!(o.error.bits(), 0x01, "diagnostic code");
                assert_eq!((d.inb(2), d.inb(3), d.inb(4), d.inb(5)), (1, 1, 0, 0));
            }
            Action::ReadNativeMax => {
                let o = d.non_data(c.opcode, &tf_for(c, 0, 0));
                assert!(o.ok(), "{name}");
                let lba =
                    u64::from(d.inb(3)) | u64::from(d.inb(4)) << 8 | u64::from(d.inb(5)) << 16;
                assert_eq!(lba, SECTORS - 1, "{name}");
            }
            Action::SetMultiple => {
                assert!(d.non_data(c.opcode, &tf_for(c, 0, 8)).ok());
                d.identify();
                assert_eq!(d.identify_data().word(59), 0x0108);
            }
            Action::StandbyImmediate | Action::Standby | Action::IdleImmediate | Action::Idle => {
                assert!(d.non_data(c.opcode, &tf_for(c, 0, 0)).ok(), "{name}");
                let want = if matches!(c.action, Action::Idle | Action::IdleImmediate) {
                    0x80
                } else {
                    0x00
                };
                d.non_data(0xe5, &Tf::default());
                assert_eq!(d.inb(2), want, "{name}");
            }
            Action::CheckPowerMode => {
                let o = d.non_data(c.opcode, &Tf::default());
                assert!(o.ok());
                assert_eq!(d.inb(2), 0xff);
            }
            Action::Sleep => {
                assert!(d.non_data(c.opcode, &Tf::default()).ok());
                assert_eq!(d.non_data(0xe7, &Tf::default()).error, AtaError::ABRT);
            }
            Action::Flush => {
                d.fill_buffer(&[1; 512]);
                d.dma(0x35, &lba48(0, 1), 512, false);
                ops(d.disk());
                let o = d.non_data(c.opcode, &Tf::default());
                assert!(o.ok() && o.irqs == 1, "{name}");
                assert_eq!(ops(d.disk()), vec![HostOp::Fdatasync], "{name}");
            }
            Action::Identify => {
                let o = d.pio_in(c.opcode, &Tf::default(), 512, 512);
                assert!(o.ok() && o.irqs == 1);
                assert_eq!(o.data.len(), 512);
                assert_eq!(o.data[510], 0xa5);
                assert_eq!(o.data.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
            }
            Action::SetFeatures => {
                let o = d.non_data(
                    c.opcode,
                    &Tf {
                        features: 0xaa,
                        ..Tf::default()
                    },
                );
                assert!(o.ok() && o.irqs == 1, "{name}");
            }
        }
        assert!(!d.alt_status().contains(Status::BSY), "{name} left BSY");
    }
}

#[test]
fn every_set_features_subcommand() {
    for f in SET_FEATURES {
        let (_f, mut d) = setup(CacheMode::Writeback);
        let count = if f.code == 0x03 { 0x0c } else { 0 };
        let o = d.non_data(
            0xef,
            &Tf {
                features: u16::from(f.code),
                count,
                ..Tf::default()
            },
        );
        assert!(o.ok() && o.irqs == 1, "{}: {o:?}", f.name);
        let id = d.identify_data().clone();
        for bit in f.claims {
            assert!(id.bit(bit.word, bit.bit), "{} claims {bit:?}", f.name);
        }
        d.identify();
        let id = d.identify_data();
        match f.code {
            0x02 => assert!(id.bit(85, 5)),
            0x82 => assert!(!id.bit(85, 5)),
            0xaa => assert!(id.bit(85, 6)),
            0x55 => assert!(!id.bit(85, 6)),
            _ => {}
        }
    }
}

//! Behaviour of the SCSI disk logical unit, command by command, with host
//! ops asserted on hostio's trace.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use vmstor_hostio::{
    AlignedBuf, CacheMode, DataBuf, DiscardMode, Disk, ErrorAction, ExecutorKind, HostOp, Policy,
};
use vmstor_scsi::testing::{mem_disk, MemFile};
use vmstor_scsi::{
    Done, NexusId, Outcome, ScsiDisk, ScsiDiskConfig, Status, Task, TaskAttr, Tmf, TmfResponse,
    Transfer,
};

const SIZE: usize = 1 << 20; // 2048 blocks
const N0: NexusId = NexusId(0);
const N1: NexusId = NexusId(1);

struct T {
    lu: ScsiDisk,
    disk: Arc<Disk>,
    file: Arc<MemFile>,
}

fn setup_with(policy: Policy, exec: ExecutorKind) -> T {
    let (disk, file) = mem_disk(SIZE, policy, exec);
    let lu = ScsiDisk::new(disk.clone(), ScsiDiskConfig::default());
    let t = T { lu, disk, file };
    // Consume the power-on unit attention.
    let d = t.run(&[0, 0, 0, 0, 0, 0], 0);
    assert_eq!(sense(&d), (6, 0x29, 0));
    t.disk.trace().take();
    t
}

fn setup() -> T {
    setup_with(
        Policy::from_mode(CacheMode::Writeback),
        ExecutorKind::Inline,
    )
}

impl T {
    fn run(&self, cdb: &[u8], len: usize) -> Done {
        self.run_buf(N0, cdb, DataBuf::Owned(AlignedBuf::new(len)))
    }

    fn run_buf(&self, n: NexusId, cdb: &[u8], buf: DataBuf) -> Done {
        self.lu.execute(n, cdb, buf).expect("not held")
    }

    fn out(&self, cdb: &[u8], data: &[u8]) -> Done {
        self.run_buf(N0, cdb, DataBuf::Owned(AlignedBuf::from_slice(data)))
    }

    fn ops(&self) -> Vec<HostOp> {
        self.disk.trace().take().into_iter().map(|e| e.op).collect()
    }
}

fn result(d: &Done) -> &vmstor_scsi::ScsiResult {
    match &d.outcome {
        Outcome::Complete(r) => r,
        o => panic!("unexpected outcome {o:?}"),
    }
}

fn good(d: &Done) -> u64 {
    let r = result(d);
    assert_eq!(r.status, Status::Good, "sense {:02x?}", r.sense);
    r.transferred
}

fn sense(d: &Done) -> (u8, u8, u8) {
    let r = result(d);
    assert_eq!(r.status, Status::CheckCondition);
    let (_, k, a, q) = vmstor_scsi::Sense::parse(&r.sense).expect("sense data");
    (k, a, q)
}

fn data(d: &Done) -> Vec<u8> {
    let n = result(d).transferred as usize;
    match &d.buf {
        DataBuf::Owned(b) => b.as_slice()[..n].to_vec(),
        _ => panic!("owned buffer expected"),
    }
}

fn rw10(op: u8, lba: u32, n: u16, flags: u8) -> Vec<u8> {
    let mut c = vec![op, flags, 0, 0, 0, 0, 0, 0, 0, 0];
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&n.to_be_bytes());
    c
}

fn rw16(op: u8, lba: u64, n: u32, flags: u8) -> Vec<u8> {
    let mut c = vec![0u8; 16];
    c[0] = op;
    c[1] = flags;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&n.to_be_bytes());
    c
}

fn write_op(op: &HostOp) -> Option<(u64, u64, bool)> {
    match *op {
        HostOp::Write {
            offset, len, dsync, ..
        } => Some((offset, len, dsync)),
        _ => None,
    }
}

#[test]
fn unit_attention_on_first_command_and_inquiry_exempt() {
    let (disk, _) = mem_disk(SIZE, Policy::default(), ExecutorKind::Inline);
    let lu = ScsiDisk::new(disk, ScsiDiskConfig::default());
    let buf = || DataBuf::Owned(AlignedBuf::new(36));
    // INQUIRY does not report or clear the UA.
    let d = lu.execute(N0, &[0x12, 0, 0, 0, 36, 0], buf()).unwrap();
    assert_eq!(good(&d), 36);
    let d = lu.execute(N0, &[0, 0, 0, 0, 0, 0], buf()).unwrap();
    // Fixed format, byte by byte.
    assert_eq!(
        result(&d).sense,
        vec![0x70, 0, 6, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x29, 0, 0, 0, 0, 0]
    );
    let d = lu.execute(N0, &[0, 0, 0, 0, 0, 0], buf()).unwrap();
    good(&d);
    // Another nexus has its own power-on UA.
    let d = lu
        .execute(N1, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], buf())
        .unwrap();
    assert_eq!(sense(&d), (6, 0x29, 0));
}

#[test]
fn request_sense_reports_and_clears_ua_in_either_format() {
    let (disk, _) = mem_disk(SIZE, Policy::default(), ExecutorKind::Inline);
    let lu = ScsiDisk::new(disk, ScsiDiskConfig::default());
    let d = lu
        .execute(
            N0,
            &[0x03, 1, 0, 0, 252, 0],
            DataBuf::Owned(AlignedBuf::new(252)),
        )
        .unwrap();
    assert_eq!(good(&d), 8);
    assert_eq!(data(&d), vec![0x72, 6, 0x29, 0, 0, 0, 0, 0]);
    let d = lu
        .execute(
            N0,
            &[0x03, 0, 0, 0, 18, 0],
            DataBuf::Owned(AlignedBuf::new(18)),
        )
        .unwrap();
    assert_eq!(
        data(&d),
        vec![0x70, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );
}

#[test]
fn read_write_round_trip_zero_copy_and_fua_maps_to_rwf_dsync() {
    let t = setup();
    let payload: Vec<u8> = (0..1024).map(|i| (i % 251) as u8).collect();
    let d = t.out(&rw10(0x2a, 4, 2, 0), &payload);
    assert_eq!(good(&d), 1024);
    assert_eq!(t.file.read_at(4 * 512, 1024), payload);
    assert_eq!(
        t.ops().iter().filter_map(write_op).collect::<Vec<_>>(),
        vec![(2048, 1024, false)]
    );
    // FUA=1 on WRITE(10), WRITE(12), WRITE(16): RWF_DSYNC, no fdatasync.
    for cdb in [
        rw10(0x2a, 8, 2, 0x08),
        {
            let mut c = vec![0xaa, 0x08, 0, 0, 0, 8, 0, 0, 0, 2, 0, 0];
            c[1] = 0x08;
            c
        },
        rw16(0x8a, 8, 2, 0x08),
        rw10(0x2e, 8, 2, 0), // WRITE AND VERIFY(10)
        rw16(0x8e, 8, 2, 0), // WRITE AND VERIFY(16)
    ] {
        good(&t.out(&cdb, &payload));
        let ops = t.ops();
        assert_eq!(
            ops.iter().filter_map(write_op).collect::<Vec<_>>(),
            vec![(4096, 1024, true)],
            "{cdb:02x?}"
        );
        assert!(!ops.contains(&HostOp::Fdatasync));
    }
    // READ(6/10/12/16) all return the data.
    for cdb in [
        vec![0x08, 0, 0, 4, 2, 0],
        rw10(0x28, 4, 2, 0x18),
        vec![0xa8, 0, 0, 0, 0, 4, 0, 0, 0, 2, 0, 0],
        rw16(0x88, 4, 2, 0),
    ] {
        let d = t.run(&cdb, 1024);
        assert_eq!(data(&d), payload, "{cdb:02x?}");
    }
    // WRITE(6) with length 0 means 256 blocks.
    let big = vec![0xabu8; 256 * 512];
    good(&t.out(&[0x0a, 0, 0x01, 0, 0, 0], &big));
    assert_eq!(t.file.read_at(256 * 512, 256 * 512), big);
    // A longer buffer: residual, data still right.
    let d = t.run(&rw10(0x28, 4, 1, 0), 4096);
    assert_eq!(good(&d), 512);
    assert_eq!(data(&d), payload[..512]);
}

#[test]
fn synchronize_cache_10_and_16_flush() {
    let t = setup();
    good(&t.out(&rw10(0x2a, 0, 1, 0), &[1u8; 512]));
    t.ops();
    good(&t.run(&rw10(0x35, 0, 0, 0), 0));
    assert_eq!(t.ops(), vec![HostOp::Fdatasync]);
    good(&t.out(&rw10(0x2a, 0, 1, 0), &[2u8; 512]));
    t.ops();
    good(&t.run(&rw16(0x91, 0, 0, 0x02), 0));
    assert_eq!(t.ops(), vec![HostOp::Fdatasync]);
    // Range is checked.
    assert_eq!(sense(&t.run(&rw16(0x91, 2048, 1, 0), 0)), (5, 0x21, 0));
}

fn mode_sense_caching(t: &T, pc: u8) -> Vec<u8> {
    let d = t.run(&[0x1a, 0x08, (pc << 6) | 0x08, 0, 0xff, 0], 255);
    data(&d)
}

fn caching_select(wce: bool) -> Vec<u8> {
    let mut l = vec![0u8, 0, 0, 0];
    let mut p = vec![0u8; 20];
    p[0] = 0x08;
    p[1] = 0x12;
    p[2] = u8::from(wce) << 2;
    l.extend(p);
    l
}

#[test]
fn mode_select_wce_off_flushes_before_good_then_writes_are_fua() {
    let t = setup();
    let p = mode_sense_caching(&t, 0);
    assert_eq!(&p[..4], &[23, 0, 0x10, 0]);
    assert_eq!(&p[4..7], &[0x08, 0x12, 0x04]);
    good(&t.out(&rw10(0x2a, 0, 1, 0), &[3u8; 512]));
    t.ops();
    let l = caching_select(false);
    let d = t.out(&[0x15, 0x10, 0, 0, l.len() as u8, 0], &l);
    assert_eq!(good(&d), l.len() as u64);
    assert_eq!(t.ops(), vec![HostOp::Fdatasync]);
    assert!(!t.disk.write_cache());
    assert_eq!(mode_sense_caching(&t, 0)[6], 0x00);
    // Default stays WCE=1, changeable is WCE only.
    assert_eq!(mode_sense_caching(&t, 2)[6], 0x04);
    assert_eq!(&mode_sense_caching(&t, 1)[4..7], &[0x08, 0x12, 0x04]);
    good(&t.out(&rw10(0x2a, 0, 1, 0), &[4u8; 512]));
    assert_eq!(
        t.ops().iter().filter_map(write_op).collect::<Vec<_>>(),
        vec![(0, 512, true)]
    );
    // WCE back on: no sync, plain writes.
    let l = caching_select(true);
    good(
        &t.out(&[0x55, 0x10, 0, 0, 0, 0, 0, 0, (l.len() + 4) as u8, 0], &{
            let mut l10 = vec![0u8; 8];
            l10.extend_from_slice(&l[4..]);
            l10
        }),
    );
    assert!(t.disk.write_cache());
    assert!(!t.ops().contains(&HostOp::Fdatasync));
}

#[test]
fn mode_select_failed_flush_reports_write_error() {
    let t = setup();
    good(&t.out(&rw10(0x2a, 0, 1, 0), &[3u8; 512]));
    t.file.sync_errno.store(libc::EIO, Ordering::SeqCst);
    let l = caching_select(false);
    let d = t.out(&[0x15, 0x10, 0, 0, l.len() as u8, 0], &l);
    assert_eq!(sense(&d), (3, 0x0c, 0));
    assert!(!t.disk.write_cache());
}

#[test]
fn mode_select_rules_and_mode_parameters_changed_ua_for_other_nexus() {
    let t = setup();
    // N1 consumes its power-on UA.
    let d = t.run_buf(N1, &[0, 0, 0, 0, 0, 0], DataBuf::None);
    assert_eq!(sense(&d), (6, 0x29, 0));
    // PF=0 → INVALID FIELD IN CDB byte 1 bit 4; SP=1 → bit 0.
    let l = caching_select(false);
    let d = t.out(&[0x15, 0x00, 0, 0, l.len() as u8, 0], &l);
    assert_eq!(
        result(&d).sense,
        vec![0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0xcc, 0, 1]
    );
    let d = t.out(&[0x15, 0x11, 0, 0, l.len() as u8, 0], &l);
    assert_eq!(&result(&d).sense[15..18], &[0xc8, 0, 1]);
    // Non-changeable bit (RCD) → INVALID FIELD IN PARAMETER LIST, byte 6 bit 0.
    let mut bad = caching_select(true);
    bad[6] |= 1;
    let d = t.out(&[0x15, 0x10, 0, 0, bad.len() as u8, 0], &bad);
    assert_eq!(
        result(&d).sense,
        vec![0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x26, 0, 0, 0x88, 0, 6]
    );
    // Truncated list → PARAMETER LIST LENGTH ERROR.
    let d = t.out(&[0x15, 0x10, 0, 0, 10, 0], &l[..10]);
    assert_eq!(sense(&d), (5, 0x1a, 0));
    assert!(t.disk.write_cache());
    // Nothing changed so far: N1 has no UA.
    good(&t.run_buf(N1, &[0, 0, 0, 0, 0, 0], DataBuf::None));
    // A change from N0 raises MODE PARAMETERS CHANGED on N1 only.
    good(&t.out(&[0x15, 0x10, 0, 0, l.len() as u8, 0], &l));
    good(&t.run(&[0, 0, 0, 0, 0, 0], 0));
    let d = t.run_buf(N1, &[0, 0, 0, 0, 0, 0], DataBuf::None);
    assert_eq!(sense(&d), (6, 0x2a, 0x01));
    good(&t.run_buf(N1, &[0, 0, 0, 0, 0, 0], DataBuf::None));
    // Saved values → SAVING PARAMETERS NOT SUPPORTED.
    assert_eq!(
        sense(&t.run(&[0x1a, 0, 0xc8, 0, 0xff, 0], 255)),
        (5, 0x39, 0)
    );
}

#[test]
fn d_sense_switches_check_condition_to_descriptor_format() {
    let t = setup();
    let mut l = vec![0u8, 0, 0, 0, 0x0a, 0x0a, 0x04, 0x10, 0, 0, 0, 0, 0, 0, 0, 0];
    good(&t.out(&[0x15, 0x10, 0, 0, l.len() as u8, 0], &l));
    let d = t.run(&[0xee, 0, 0, 0, 0, 0], 0);
    assert_eq!(
        result(&d).sense,
        vec![0x72, 5, 0x20, 0, 0, 0, 0, 8, 2, 6, 0, 0, 0xc0, 0, 0, 0]
    );
    let m = data(&t.run(&[0x1a, 0x08, 0x0a, 0, 0xff, 0], 255));
    assert_eq!(m[6], 0x04);
    l[6] = 0;
    good(&t.out(&[0x15, 0x10, 0, 0, l.len() as u8, 0], &l));
    assert_eq!(result(&t.run(&[0xee, 0, 0, 0, 0, 0], 0)).sense[0], 0x70);
}

#[test]
fn cdb_validation_sense_bytes() {
    let t = setup();
    // Invalid opcode, fixed format, field pointer at byte 0.
    let d = t.run(&[0xee, 0, 0, 0, 0, 0], 0);
    assert_eq!(
        result(&d).sense,
        vec![0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x20, 0, 0, 0xc0, 0, 0]
    );
    // Unknown service action of SERVICE ACTION IN(16): pointer at byte 1.
    let mut c = rw16(0x9e, 0, 32, 0x11);
    c[1] = 0x11;
    assert_eq!(
        &result(&t.run(&c, 32)).sense[12..18],
        &[0x20, 0, 0, 0xc0, 0, 1]
    );
    // RDPROTECT on READ(10): INVALID FIELD IN CDB byte 1 bit 7.
    let d = t.run(&rw10(0x28, 0, 1, 0xe0), 512);
    assert_eq!(&result(&d).sense[12..18], &[0x24, 0, 0, 0xcf, 0, 1]);
    // NACA in the control byte.
    let mut c = rw10(0x28, 0, 1, 0);
    c[9] = 0x04;
    assert_eq!(&result(&t.run(&c, 512)).sense[15..18], &[0xca, 0, 9]);
    // LBA out of range.
    assert_eq!(sense(&t.run(&rw10(0x28, 2047, 2, 0), 1024)), (5, 0x21, 0));
    assert_eq!(
        sense(&t.run(&rw16(0x88, u64::MAX, 1, 0), 512)),
        (5, 0x21, 0)
    );
    // Transfer length beyond MAXIMUM TRANSFER LENGTH.
    let (disk, _) = mem_disk(SIZE, Policy::default(), ExecutorKind::Inline);
    let lu = ScsiDisk::new(
        disk,
        ScsiDiskConfig {
            max_transfer_bytes: 4096,
            ..Default::default()
        },
    );
    lu.execute(N0, &[0; 6], DataBuf::None);
    let d = lu
        .execute(
            N0,
            &rw10(0x28, 0, 9, 0),
            DataBuf::Owned(AlignedBuf::new(9 * 512)),
        )
        .unwrap();
    assert_eq!(&result(&d).sense[12..18], &[0x24, 0, 0, 0xc0, 0, 7]);
    // VERIFY with BYTCHK=01b is not supported: byte 1 bit 1.
    assert_eq!(
        &result(&t.run(&rw10(0x2f, 0, 1, 0x02), 0)).sense[15..18],
        &[0xc9, 0, 1]
    );
    good(&t.run(&rw10(0x2f, 0, 8, 0), 0));
    // VERIFY(16): the same rules.
    assert_eq!(
        &result(&t.run(&rw16(0x8f, 0, 1, 0x02), 0)).sense[15..18],
        &[0xc9, 0, 1]
    );
    good(&t.run(&rw16(0x8f, 0, 8, 0), 0));
    assert!(t.ops().is_empty());
}

#[test]
fn short_buffer_is_overrun_and_nothing_runs() {
    let t = setup();
    let d = t.run(&rw10(0x2a, 0, 2, 0), 512);
    assert_eq!(d.outcome, Outcome::Overrun);
    assert!(t.ops().is_empty());
    assert_eq!(t.lu.transfer(&rw10(0x2a, 0, 2, 0)), Transfer::Out(1024));
    assert_eq!(t.lu.transfer(&rw10(0x28, 0, 2, 0)), Transfer::In(1024));
    assert_eq!(t.lu.transfer(&[0x12, 0, 0, 0, 96, 0]), Transfer::In(96));
    assert_eq!(t.lu.transfer(&[0xee, 0, 0, 0, 96, 0]), Transfer::None);
    assert_eq!(t.lu.transfer(&rw10(0x35, 0, 2, 0)), Transfer::None);
}

#[test]
fn host_errors_map_to_sense() {
    let mut policy = Policy::default();
    policy.errors.write = ErrorAction::Report;
    let t = setup_with(policy, ExecutorKind::Inline);
    t.file.read_errno.store(libc::EIO, Ordering::SeqCst);
    assert_eq!(sense(&t.run(&rw10(0x28, 0, 1, 0), 512)), (3, 0x11, 0));
    t.file.read_errno.store(0, Ordering::SeqCst);
    t.file.write_errno.store(libc::EIO, Ordering::SeqCst);
    assert_eq!(sense(&t.out(&rw10(0x2a, 0, 1, 0), &[1; 512])), (3, 0x0c, 0));
    t.file.write_errno.store(libc::ENOSPC, Ordering::SeqCst);
    let d = t.out(&rw10(0x2a, 0, 1, 0), &[1; 512]);
    assert_eq!(
        result(&d).sense,
        vec![0x70, 0, 7, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x27, 0x07, 0, 0, 0, 0]
    );
    t.file.write_errno.store(0, Ordering::SeqCst);
    good(&t.out(&rw10(0x2a, 0, 1, 0), &[1; 512]));
    t.file.sync_errno.store(libc::EIO, Ordering::SeqCst);
    assert_eq!(sense(&t.run(&rw10(0x35, 0, 0, 0), 0)), (3, 0x0c, 0));
    // The failure is latched: a later flush fails too, even if the host
    // would now succeed.
    t.file.sync_errno.store(0, Ordering::SeqCst);
    assert_eq!(sense(&t.run(&rw16(0x91, 0, 0, 0), 0)), (3, 0x0c, 0));
}

/// Turns descriptor-format sense on (D_SENSE=1) or off.
fn set_d_sense(t: &T, on: bool) {
    let l = [
        0u8,
        0,
        0,
        0,
        0x0a,
        0x0a,
        if on { 0x04 } else { 0 },
        0x10,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    good(&t.out(&[0x15, 0x10, 0, 0, l.len() as u8, 0], &l));
}

/// Fixed-format MEDIUM ERROR with VALID set and `lba` in INFORMATION.
fn fixed_medium(asc: u8, lba: u32) -> Vec<u8> {
    let i = lba.to_be_bytes();
    vec![
        0xf0, 0, 0x03, i[0], i[1], i[2], i[3], 10, 0, 0, 0, 0, asc, 0, 0, 0, 0, 0,
    ]
}

/// Descriptor-format MEDIUM ERROR with an Information descriptor (type
/// 00h, VALID set, 8-byte INFORMATION).
fn descriptor_medium(asc: u8, lba: u64) -> Vec<u8> {
    let mut v = vec![0x72, 0x03, asc, 0, 0, 0, 0, 12, 0x00, 0x0a, 0x80, 0x00];
    v.extend_from_slice(&lba.to_be_bytes());
    v
}

/// A command whose host I/O fails: name, CDB, data-out (None: a read),
/// expected ASC, starting LBA.
type Case = (&'static str, Vec<u8>, Option<[u8; 512]>, u8, u32);

#[test]
fn host_read_and_write_errors_carry_the_starting_lba_in_information() {
    let mut policy = Policy::default();
    policy.errors.write = ErrorAction::Report;
    let t = setup_with(policy, ExecutorKind::Inline);
    for d_sense in [false, true] {
        set_d_sense(&t, d_sense);
        let want = |asc: u8, lba: u32| {
            if d_sense {
                descriptor_medium(asc, u64::from(lba))
            } else {
                fixed_medium(asc, lba)
            }
        };
        // WRITE SAME(16) with a non-zero pattern is a plain host write.
        let cases: [Case; 5] = [
            ("READ(10)", rw10(0x28, 0x07fe, 2, 0), None, 0x11, 0x07fe),
            ("READ(16)", rw16(0x88, 0x0123, 1, 0), None, 0x11, 0x0123),
            (
                "WRITE(10)",
                rw10(0x2a, 0x0456, 1, 0),
                Some([1; 512]),
                0x0c,
                0x0456,
            ),
            (
                "WRITE(16) FUA",
                rw16(0x8a, 0x0789, 1, 0x08),
                Some([1; 512]),
                0x0c,
                0x0789,
            ),
            (
                "WRITE SAME(16)",
                rw16(0x93, 0x0100, 8, 0),
                Some([7; 512]),
                0x0c,
                0x0100,
            ),
        ];
        for (name, cdb, out, asc, lba) in &cases {
            t.file.read_errno.store(libc::EIO, Ordering::SeqCst);
            t.file.write_errno.store(libc::EIO, Ordering::SeqCst);
            let d = match out {
                None => t.run(cdb, 1024),
                Some(data) => t.out(cdb, data),
            };
            t.file.read_errno.store(0, Ordering::SeqCst);
            t.file.write_errno.store(0, Ordering::SeqCst);
            assert_eq!(
                result(&d).sense,
                want(*asc, *lba),
                "{name}, D_SENSE={d_sense}"
            );
        }

        // A failed flush has no LBA: VALID clear, no Information descriptor.
        t.file.sync_errno.store(libc::EIO, Ordering::SeqCst);
        good(&t.out(&rw10(0x2a, 0, 1, 0), &[1; 512]));
        let d = t.run(&rw10(0x35, 0, 0, 0), 0);
        let want_flush = if d_sense {
            vec![0x72, 0x03, 0x0c, 0, 0, 0, 0, 0]
        } else {
            vec![
                0x70, 0, 0x03, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x0c, 0, 0, 0, 0, 0,
            ]
        };
        assert_eq!(
            result(&d).sense,
            want_flush,
            "SYNCHRONIZE CACHE, D_SENSE={d_sense}"
        );
        t.file.sync_errno.store(0, Ordering::SeqCst);
    }
}

#[test]
fn information_beyond_32_bits_clears_valid_in_fixed_format_only() {
    use vmstor_hostio::{IoError, Op};
    use vmstor_scsi::lu::host_sense;
    let lba = 0x1_2345_6789u64;
    let s = host_sense(Op::Read, IoError::new(libc::EIO), Some(lba));
    // Fixed format: the field is 32 bits, so VALID stays clear and the
    // field zero rather than a truncated LBA.
    assert_eq!(
        s.fixed().to_vec(),
        vec![0x70, 0, 0x03, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x11, 0, 0, 0, 0, 0]
    );
    assert_eq!(s.descriptor(), descriptor_medium(0x11, lba));
    // The largest LBA that fits still sets VALID.
    let s = host_sense(
        Op::Write { fua: false },
        IoError::new(libc::EIO),
        Some(0xffff_ffff),
    );
    assert_eq!(s.fixed().to_vec(), fixed_medium(0x0c, 0xffff_ffff));
    // DATA PROTECT conditions carry no INFORMATION.
    let s = host_sense(
        Op::Write { fua: false },
        IoError::new(libc::ENOSPC),
        Some(5),
    );
    assert_eq!(s.fixed()[0], 0x70);
    assert_eq!(s.descriptor().len(), 8);
}

#[test]
fn enospc_with_default_policy_holds_the_command_until_resumed() {
    let t = setup();
    t.file.write_errno.store(libc::ENOSPC, Ordering::SeqCst);
    let r = t.lu.execute(
        N0,
        &rw10(0x2a, 0, 1, 0),
        DataBuf::Owned(AlignedBuf::from_slice(&[9; 512])),
    );
    assert!(r.is_none());
    assert_eq!(t.lu.tasks(), 1);
    assert_eq!(t.disk.held_count(), 1);
    t.file.write_errno.store(0, Ordering::SeqCst);
    assert_eq!(t.disk.resume_held(), 1);
    let done = t.lu.poll();
    assert_eq!(done.len(), 1);
    assert_eq!(good(&done[0]), 512);
    assert_eq!(t.file.read_at(0, 512), vec![9; 512]);
}

#[test]
fn write_protected_disk() {
    let p = Policy {
        read_only: true,
        ..Default::default()
    };
    let t = setup_with(p, ExecutorKind::Inline);
    assert_eq!(sense(&t.out(&rw10(0x2a, 0, 1, 0), &[0; 512])), (7, 0x27, 0));
    assert_eq!(
        sense(&t.out(&[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], &[0; 24])),
        (7, 0x27, 0)
    );
    // WP in the mode header.
    assert_eq!(data(&t.run(&[0x1a, 0x08, 0x08, 0, 0xff, 0], 255))[2], 0x90);
    good(&t.run(&rw10(0x28, 0, 1, 0), 512));
    assert!(t.ops().iter().all(|o| write_op(o).is_none()));
}

#[test]
fn read_capacity_and_provisioning() {
    let t = setup();
    let d = data(&t.run(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8));
    assert_eq!(d, vec![0, 0, 0x07, 0xff, 0, 0, 2, 0]);
    let c = {
        let mut c = rw16(0x9e, 0, 32, 0x10);
        c[1] = 0x10;
        c
    };
    let d = data(&t.run(&c, 32));
    assert_eq!(
        &d[..16],
        &[0, 0, 0, 0, 0, 0, 0x07, 0xff, 0, 0, 2, 0, 0, 3, 0, 0]
    );
    // Discard policy unmap: LBPME + LBPRZ (file backing), VPD B2 thin.
    let p = Policy {
        discard: DiscardMode::Unmap,
        ..Default::default()
    };
    let t = setup_with(p, ExecutorKind::Inline);
    let d = data(&t.run(&c, 32));
    assert_eq!(d[14], 0xc0);
    let b2 = data(&t.run(&[0x12, 1, 0xb2, 0, 0xff, 0], 255));
    assert_eq!(b2, vec![0, 0xb2, 0, 4, 0, 0xe4, 2, 0]);
}

fn unmap_list(descs: &[(u64, u32)]) -> Vec<u8> {
    let mut l = vec![0u8; 8];
    l[0..2].copy_from_slice(&((6 + 16 * descs.len()) as u16).to_be_bytes());
    l[2..4].copy_from_slice(&((16 * descs.len()) as u16).to_be_bytes());
    for (lba, n) in descs {
        l.extend_from_slice(&lba.to_be_bytes());
        l.extend_from_slice(&n.to_be_bytes());
        l.extend_from_slice(&[0; 4]);
    }
    l
}

fn unmap_cdb(len: usize) -> Vec<u8> {
    let mut c = vec![0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    c[7..9].copy_from_slice(&(len as u16).to_be_bytes());
    c
}

#[test]
fn unmap_discards_each_descriptor_after_validating_all() {
    let p = Policy {
        discard: DiscardMode::Unmap,
        ..Default::default()
    };
    let t = setup_with(p, ExecutorKind::Inline);
    t.file.write_at(0, &[0xff; 4096]);
    let l = unmap_list(&[(0, 2), (4, 0), (6, 2)]);
    assert_eq!(good(&t.out(&unmap_cdb(l.len()), &l)), l.len() as u64);
    assert_eq!(
        t.ops(),
        vec![
            HostOp::PunchHole {
                offset: 0,
                len: 1024
            },
            HostOp::PunchHole {
                offset: 3072,
                len: 1024
            }
        ]
    );
    assert_eq!(t.file.read_at(0, 1024), vec![0; 1024]);
    assert_eq!(t.file.read_at(1024, 2048), vec![0xff; 2048]);
    // One bad descriptor: nothing is discarded.
    let l = unmap_list(&[(0, 1), (2047, 2)]);
    assert_eq!(sense(&t.out(&unmap_cdb(l.len()), &l)), (5, 0x21, 0));
    assert!(t.ops().is_empty());
    // Parameter list shorter than its header / its lengths.
    assert_eq!(sense(&t.out(&unmap_cdb(4), &[0; 4])), (5, 0x1a, 0));
    let mut l = unmap_list(&[(0, 1)]);
    l[3] = 32;
    assert_eq!(sense(&t.out(&unmap_cdb(l.len()), &l)), (5, 0x1a, 0));
    // ANCHOR is not supported.
    let mut c = unmap_cdb(24);
    c[1] = 1;
    assert_eq!(sense(&t.out(&c, &unmap_list(&[(0, 1)]))), (5, 0x24, 0));
    good(&t.out(&unmap_cdb(0), &[]));
}

#[test]
fn write_same_zeroes_unmap_and_pattern() {
    let p = Policy {
        discard: DiscardMode::Unmap,
        ..Default::default()
    };
    let t = setup_with(p, ExecutorKind::Inline);
    t.file.write_at(0, &[0xee; 8192]);
    // WRITE SAME(16) UNMAP=1 with a zero block → punch hole.
    good(&t.out(&rw16(0x93, 0, 4, 0x08), &[0; 512]));
    assert_eq!(
        t.ops(),
        vec![HostOp::PunchHole {
            offset: 0,
            len: 2048
        }]
    );
    assert_eq!(t.file.read_at(0, 2048), vec![0; 2048]);
    // WRITE SAME(10) zero block without UNMAP → zero range (no unmap).
    good(&t.out(&rw10(0x41, 4, 4, 0), &[0; 512]));
    assert_eq!(
        t.ops(),
        vec![HostOp::ZeroRange {
            offset: 2048,
            len: 2048
        }]
    );
    // NDOB: no data-out buffer.
    good(&t.run(&rw16(0x93, 8, 2, 0x09), 0));
    t.ops();
    // A pattern is written, in chunks of at most write_same_chunk.
    let (disk, file) = mem_disk(SIZE, Policy::default(), ExecutorKind::Inline);
    let lu = ScsiDisk::new(
        disk.clone(),
        ScsiDiskConfig {
            write_same_chunk: 2048,
            ..Default::default()
        },
    );
    lu.execute(N0, &[0; 6], DataBuf::None);
    disk.trace().take();
    let block: Vec<u8> = (0..512).map(|i| i as u8).collect();
    let d = lu
        .execute(
            N0,
            &rw10(0x41, 10, 10, 0),
            DataBuf::Owned(AlignedBuf::from_slice(&block)),
        )
        .unwrap();
    assert_eq!(good(&d), 512);
    let writes: Vec<_> = disk
        .trace()
        .take()
        .iter()
        .filter_map(|e| write_op(&e.op))
        .collect();
    assert_eq!(
        writes,
        vec![
            (5120, 2048, false),
            (7168, 2048, false),
            (9216, 1024, false)
        ]
    );
    for i in 10..20 {
        assert_eq!(file.read_at(i * 512, 512), block);
    }
    // NUMBER OF BLOCKS 0 → INVALID FIELD IN CDB at the length (WSNZ=1).
    assert_eq!(
        &result(&t.out(&rw10(0x41, 0, 0, 0), &[0; 512])).sense[12..18],
        &[0x24, 0, 0, 0xc0, 0, 7]
    );
    // Out of range.
    assert_eq!(
        sense(&t.out(&rw10(0x41, 2047, 2, 0), &[0; 512])),
        (5, 0x21, 0)
    );
}

#[test]
fn start_stop_unit_stop_flushes_then_not_ready() {
    let t = setup();
    good(&t.out(&rw10(0x2a, 0, 1, 0), &[5; 512]));
    t.ops();
    good(&t.run(&[0x1b, 0, 0, 0, 0, 0], 0));
    assert_eq!(t.ops(), vec![HostOp::Fdatasync]);
    assert_eq!(sense(&t.run(&[0, 0, 0, 0, 0, 0], 0)), (2, 0x04, 0x02));
    assert_eq!(sense(&t.run(&rw10(0x28, 0, 1, 0), 512)), (2, 0x04, 0x02));
    let d = t.run(&[0x03, 0, 0, 0, 18, 0], 18);
    assert_eq!(&data(&d)[12..14], &[0x04, 0x02]);
    good(&t.run(&[0x1b, 0, 0, 0, 1, 0], 0));
    good(&t.run(&[0, 0, 0, 0, 0, 0], 0));
    // POWER CONDITION other than START_VALID is rejected.
    assert_eq!(sense(&t.run(&[0x1b, 0, 0, 0, 0x30, 0], 0)), (5, 0x24, 0));
    // PREVENT ALLOW MEDIUM REMOVAL.
    good(&t.run(&[0x1e, 0, 0, 0, 1, 0], 0));
    assert_eq!(sense(&t.run(&[0x1e, 0, 0, 0, 2, 0], 0)), (5, 0x24, 0));
}

#[test]
fn inquiry_report_luns_and_supported_opcodes() {
    let t = setup();
    let d = data(&t.run(&[0x12, 0, 0, 0, 36, 0], 36));
    assert_eq!(&d[8..16], b"VMSTOR  ");
    // Truncated to the allocation length.
    assert_eq!(good(&t.run(&[0x12, 0, 0, 0, 5, 0], 5)), 5);
    let d = data(&t.run(&[0x12, 1, 0x00, 0, 0xff, 0], 255));
    assert_eq!(d, vec![0, 0, 0, 6, 0, 0x80, 0x83, 0xb0, 0xb1, 0xb2]);
    t.lu.set_report_luns(vec![0, 1, 300]);
    // The LUN inventory changed: UA, cleared by REPORT LUNS.
    let d = data(&t.run(&[0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], 256));
    assert_eq!(&d[..8], &[0, 0, 0, 24, 0, 0, 0, 0]);
    assert_eq!(&d[8..16], &[0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&d[16..18], &[0, 1]);
    assert_eq!(&d[24..26], &[0x41, 0x2c]);
    good(&t.run(&[0, 0, 0, 0, 0, 0], 0));
    let d = data(&t.run(&[0xa3, 0x0c, 1, 0x91, 0, 0, 0, 0, 1, 0, 0, 0], 256));
    assert_eq!(&d[..5], &[0, 3, 0, 16, 0x91]);
}

/// ORDERED drains earlier commands and holds later ones; HEAD OF QUEUE
/// runs at once.
#[test]
fn ordered_task_drains_and_holds() {
    let t = setup_with(Policy::default(), ExecutorKind::Threads(2));
    t.file.set_gate(false);
    let task = |token: u64, attr: TaskAttr, cdb: Vec<u8>, buf: DataBuf| Task {
        token,
        nexus: N0,
        tag: token,
        attr,
        cdb,
        buf,
    };
    let w = |b: u8| DataBuf::Owned(AlignedBuf::from_slice(&[b; 512]));
    assert!(t
        .lu
        .submit(task(1, TaskAttr::Simple, rw10(0x2a, 0, 1, 0), w(1)))
        .is_empty());
    assert!(t
        .lu
        .submit(task(
            2,
            TaskAttr::Ordered,
            rw10(0x35, 0, 0, 0),
            DataBuf::None
        ))
        .is_empty());
    assert!(t
        .lu
        .submit(task(3, TaskAttr::Simple, rw10(0x2a, 1, 1, 0), w(3)))
        .is_empty());
    // HEAD OF QUEUE runs while the write is stuck.
    let d = t.lu.submit(task(
        4,
        TaskAttr::HeadOfQueue,
        vec![0, 0, 0, 0, 0, 0],
        DataBuf::None,
    ));
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].token, 4);
    // Only the first write reached the host; the flush and the later write
    // wait.
    assert_eq!(t.lu.tasks(), 3);
    assert!(!t
        .disk
        .trace()
        .snapshot()
        .iter()
        .any(|e| e.op == HostOp::Fdatasync));
    let c = t.disk.counters();
    assert_eq!((c.writes, c.flushes_asked), (1, 0));
    t.file.set_gate(true);
    let mut order = Vec::new();
    while order.len() < 3 {
        for d in t.lu.wait() {
            good(&d);
            order.push(d.token);
        }
    }
    assert_eq!(order, vec![1, 2, 3]);
    let ops: Vec<HostOp> = t.ops();
    let pos = |f: &dyn Fn(&HostOp) -> bool| ops.iter().position(f).unwrap();
    let w1 = pos(&|o| matches!(o, HostOp::Write { offset: 0, .. }));
    let fl = pos(&|o| *o == HostOp::Fdatasync);
    let w3 = pos(&|o| matches!(o, HostOp::Write { offset: 512, .. }));
    assert!(w1 < fl && fl < w3, "{ops:?}");
}

#[test]
fn task_management_functions() {
    let t = setup_with(Policy::default(), ExecutorKind::Threads(1));
    // N1 consumes its power-on UA.
    let _ = t.lu.execute(N1, &[0; 6], DataBuf::None);
    t.file.set_gate(false);
    let task = |token: u64, nexus: NexusId, attr: TaskAttr, cdb: Vec<u8>| Task {
        token,
        nexus,
        tag: token + 100,
        attr,
        cdb,
        buf: DataBuf::Owned(AlignedBuf::from_slice(&[7; 512])),
    };
    t.lu.submit(task(1, N0, TaskAttr::Simple, rw10(0x2a, 0, 1, 0)));
    t.lu.submit(task(2, N0, TaskAttr::Ordered, rw10(0x2a, 1, 1, 0)));
    t.lu.submit(task(3, N1, TaskAttr::Simple, rw10(0x2a, 2, 1, 0)));
    t.lu.submit(task(4, N0, TaskAttr::Simple, rw10(0x2a, 3, 1, 0)));
    assert_eq!(
        t.lu.task_management(N0, Tmf::QueryTask { tag: 102 }).0,
        TmfResponse::Succeeded
    );
    assert_eq!(
        t.lu.task_management(N1, Tmf::QueryTask { tag: 102 }).0,
        TmfResponse::Complete
    );
    assert_eq!(
        t.lu.task_management(N1, Tmf::QueryTaskSet).0,
        TmfResponse::Succeeded
    );
    assert_eq!(
        t.lu.task_management(N0, Tmf::ClearAca).0,
        TmfResponse::Rejected
    );
    // ABORT TASK of a waiting task: ends at once as aborted.
    let (r, done) = t.lu.task_management(N0, Tmf::AbortTask { tag: 104 });
    assert_eq!(r, TmfResponse::Complete);
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].token, &done[0].outcome), (4, &Outcome::Aborted));
    // Unknown tag: FUNCTION COMPLETE, nothing ends.
    let (r, done) = t.lu.task_management(N0, Tmf::AbortTask { tag: 999 });
    assert_eq!((r, done.len()), (TmfResponse::Complete, 0));
    // ABORT TASK SET for N0: the waiting ORDERED write ends at once; the
    // running one ends (aborted) once its host write returns.
    t.file.set_gate(true);
    let (r, mut done) = t.lu.task_management(N0, Tmf::AbortTaskSet);
    assert_eq!(r, TmfResponse::Complete);
    // N1's task was not selected; it runs (it may already have finished
    // while the TMF collected completions).
    while t.lu.tasks() > 0 {
        done.extend(t.lu.wait());
    }
    let mut got: Vec<(u64, Outcome)> = done.into_iter().map(|d| (d.token, d.outcome)).collect();
    got.sort_by_key(|g| g.0);
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], (1, Outcome::Aborted));
    assert_eq!(got[1], (2, Outcome::Aborted));
    assert_eq!(got[2].0, 3);
    assert!(matches!(&got[2].1, Outcome::Complete(r) if r.status == Status::Good));
    assert_eq!(t.file.read_at(512, 512), vec![0; 512]); // task 2 never ran

    // CLEAR TASK SET from N0 clears N1's tasks and tells N1.
    t.file.set_gate(false);
    t.lu.submit(task(5, N0, TaskAttr::Ordered, rw10(0x2a, 0, 1, 0)));
    t.lu.submit(task(6, N1, TaskAttr::Simple, rw10(0x2a, 1, 1, 0)));
    t.file.set_gate(true);
    let (_, done) = t.lu.task_management(N0, Tmf::ClearTaskSet);
    assert_eq!(done.len(), 2);
    assert!(done.iter().all(|d| d.outcome == Outcome::Aborted));
    assert_eq!(
        sense(&t.lu.execute(N1, &[0; 6], DataBuf::None).unwrap()),
        (6, 0x2f, 0)
    );

    // LOGICAL UNIT RESET: tasks end with Reset, every nexus gets 29/03.
    t.file.set_gate(false);
    t.lu.submit(task(7, N0, TaskAttr::Ordered, rw10(0x2a, 0, 1, 0)));
    t.lu.submit(task(8, N0, TaskAttr::Simple, rw10(0x2a, 1, 1, 0)));
    t.file.set_gate(true);
    let (r, done) = t.lu.task_management(N0, Tmf::LogicalUnitReset);
    assert_eq!(r, TmfResponse::Complete);
    assert_eq!(done.len(), 2);
    assert!(done.iter().all(|d| d.outcome == Outcome::Reset));
    assert_eq!(t.lu.tasks(), 0);
    for n in [N0, N1] {
        assert_eq!(
            sense(&t.lu.execute(n, &[0; 6], DataBuf::None).unwrap()),
            (6, 0x29, 3)
        );
    }

    // I_T NEXUS RESET: only that nexus, 29/07.
    let (_, done) = t.lu.task_management(N1, Tmf::ItNexusReset);
    assert!(done.is_empty());
    assert_eq!(
        sense(&t.lu.execute(N1, &[0; 6], DataBuf::None).unwrap()),
        (6, 0x29, 7)
    );
    good(&t.lu.execute(N0, &[0; 6], DataBuf::None).unwrap());
}

#[test]
fn abort_of_a_held_task_drops_it_from_the_disk() {
    let t = setup();
    t.file.write_errno.store(libc::ENOSPC, Ordering::SeqCst);
    assert!(t
        .lu
        .execute(
            N0,
            &rw10(0x2a, 0, 1, 0),
            DataBuf::Owned(AlignedBuf::new(512))
        )
        .is_none());
    assert_eq!(t.disk.held_count(), 1);
    let (r, done) = t.lu.task_management(N0, Tmf::AbortTaskSet);
    assert_eq!(r, TmfResponse::Complete);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].outcome, Outcome::Aborted);
    assert_eq!(t.disk.held_count(), 0);
    assert_eq!(t.lu.tasks(), 0);
}

#[test]
fn task_set_full() {
    let (disk, file) = mem_disk(SIZE, Policy::default(), ExecutorKind::Threads(1));
    let lu = ScsiDisk::new(
        disk,
        ScsiDiskConfig {
            max_tasks: 2,
            ..Default::default()
        },
    );
    let _ = lu.execute(N0, &[0; 6], DataBuf::None);
    file.set_gate(false);
    for tok in 0..2 {
        assert!(lu
            .submit(Task {
                token: tok,
                nexus: N0,
                tag: tok,
                attr: TaskAttr::Ordered,
                cdb: rw10(0x2a, 0, 1, 0),
                buf: DataBuf::Owned(AlignedBuf::new(512)),
            })
            .is_empty());
    }
    let d = lu.submit(Task {
        token: 9,
        nexus: N0,
        tag: 9,
        attr: TaskAttr::Simple,
        cdb: vec![0; 6],
        buf: DataBuf::None,
    });
    assert_eq!(result(&d[0]).status, Status::TaskSetFull);
    file.set_gate(true);
    let mut n = 0;
    while n < 2 {
        n += lu.wait().len();
    }
}

#[test]
fn capacity_change_raises_ua() {
    let t = setup();
    let (bigger, _) = mem_disk(SIZE * 2, Policy::default(), ExecutorKind::Inline);
    assert!(t.lu.replace_disk(bigger));
    assert_eq!(sense(&t.run(&[0, 0, 0, 0, 0, 0], 0)), (6, 0x2a, 0x09));
    let d = data(&t.run(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8));
    assert_eq!(&d[..4], &[0, 0, 0x0f, 0xff]);
}

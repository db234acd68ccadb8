//! hostio's crash model through the IDE controller: random guest-op
//! sequences in every cache mode, a crash after every host op (power loss
//! and host crash, adversarial per sector), each image reopened through a
//! fresh controller and checked against what the guest was promised.

use vmstor_hostio::crash::{random_ops, run_case, CaseConfig, FaultKind, GuestOp};
use vmstor_hostio::flush::Sabotage;
use vmstor_hostio::{CacheMode, DiscardMode, Disk, GuestDriver, Policy};

use super::*;

fn factory(d: Arc<Disk>) -> Box<dyn GuestDriver> {
    Box::new(IdeDriver::new(d))
}

fn case(mode: CacheMode) -> CaseConfig {
    let mut policy = Policy::from_mode(mode);
    policy.discard = DiscardMode::Unmap;
    CaseConfig {
        policy,
        host: vmstor_hostio::crash::SimHost::Full,
        size: 64 * 1024,
        sabotage: Sabotage::default(),
        fault: None,
        random_crashes: 2,
    }
}

fn cases() -> u64 {
    std::env::var("VMSTOR_CRASH_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25)
}

#[test]
fn crash_model_every_mode_keeps_its_promises() {
    for mode in CacheMode::ALL {
        let mut points = 0;
        for seed in 0..cases() {
            let ops = random_ops(seed, 16, 128);
            match run_case(&factory, &case(mode), &ops) {
                Ok(r) => {
                    points += r.crash_points;
                    assert_eq!(r.guest_errors, 0, "{mode} seed {seed}");
                }
                Err(e) => panic!("{mode} seed {seed}: {e}\nops: {ops:?}"),
            }
        }
        assert!(points > 0, "{mode}");
    }
}

#[test]
fn crash_model_with_host_faults() {
    for mode in [CacheMode::Writeback, CacheMode::Writethrough] {
        for seed in 0..2 {
            let ops: Vec<GuestOp> = random_ops(700 + seed, 10, 128);
            let total = run_case(&factory, &case(mode), &ops).unwrap().crash_points;
            for n in (1..=total).step_by(4) {
                for kind in [
                    FaultKind::Eio,
                    FaultKind::Short,
                    FaultKind::Enospc,
                    FaultKind::Eintr,
                ] {
                    let mut c = case(mode);
                    c.fault = Some((n, kind));
                    if let Err(e) = run_case(&factory, &c, &ops) {
                        panic!("{mode} seed {seed} fault {kind:?}@{n}: {e}\nops: {ops:?}");
                    }
                }
            }
        }
    }
}

#[test]
fn crash_model_catches_a_sabotaged_engine() {
    // The suite must fail when durability is broken underneath the
    // controller: flushes skipped under O_DIRECT, and WCE-off writes (a
    // writethrough preset or SET FEATURES 82h) left volatile.
    for (mode, sabotage) in [
        (
            CacheMode::None,
            Sabotage {
                skip_flush_when_direct: true,
                ..Sabotage::default()
            },
        ),
        (
            CacheMode::Writethrough,
            Sabotage {
                wce_off_not_fua: true,
                ..Sabotage::default()
            },
        ),
    ] {
        let found = (0..cases() * 4).any(|seed| {
            let ops = random_ops(seed, 16, 128);
            let mut c = case(mode);
            c.sabotage = sabotage;
            run_case(&factory, &c, &ops).is_err()
        });
        assert!(found, "{sabotage:?} went unnoticed through IDE");
    }
}

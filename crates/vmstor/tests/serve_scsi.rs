//! `vmstor serve --vhost-user-scsi` driven through a real vhost-user front
//! end (see `serve_common.rs`): feature negotiation as QEMU does it
//! (VIRTIO_SCSI_F_CHANGE included), commands on the request queues, the
//! host side observed through the counters file.

#[path = "serve_common.rs"]
mod common;

use std::fs::File;

use common::*;
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost::VhostBackend;
use vm_memory::{Bytes, GuestAddress};

// virtio 1.2 §5.6.3 feature bits.
const F_HOTPLUG: u64 = 1 << 1;
const F_CHANGE: u64 = 1 << 2;
const F_VERSION_1: u64 = 1 << 32;
/// What a Linux guest behind QEMU acknowledges.
const WANT: u64 = F_HOTPLUG | F_CHANGE | F_VERSION_1 | F_EVENT_IDX;

const REQ_LEN: usize = 51;
const RESP_LEN: usize = 108;
/// Request queues start after the control and event queues.
const RQ: usize = 2;

// Response codes (§5.6.6.1).
const S_OK: u8 = 0;
const S_BAD_TARGET: u8 = 3;
const S_RESET: u8 = 4;
// SCSI status.
const GOOD: u8 = 0;
const CHECK_CONDITION: u8 = 2;

fn proto() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK
}

fn start(luns: &[&str], extra: &[&str]) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("vu.sock");
    let mut args = vec![
        "--vhost-user-scsi".to_string(),
        socket.display().to_string(),
    ];
    let mut first = None;
    for (i, opts) in luns.iter().enumerate() {
        let image = dir.path().join(format!("lun{i}.img"));
        File::create(&image).unwrap().set_len(IMAGE_SIZE).unwrap();
        first.get_or_insert(image.clone());
        args.push("--lun".into());
        args.push(format!("{}{opts}", image.display()));
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    Daemon::spawn(dir, args, socket, first.unwrap())
}

struct ScsiReply {
    response: u8,
    status: u8,
    sense: Vec<u8>,
    data: Vec<u8>,
}

fn lun_addr(target: u8, lun: u16) -> [u8; 8] {
    [1, target, 0x40 | (lun >> 8) as u8, lun as u8, 0, 0, 0, 0]
}

/// Posts a command; returns (head, response address, data-in address).
fn post_cmd(
    g: &mut Guest,
    q: usize,
    target: u8,
    cdb: &[u8],
    out: &[u8],
    in_len: usize,
) -> (u16, u64, u64) {
    let req = g.alloc(REQ_LEN);
    let mut r = [0u8; REQ_LEN];
    r[..8].copy_from_slice(&lun_addr(target, 0));
    r[8..16].copy_from_slice(&7u64.to_le_bytes());
    r[19..19 + cdb.len()].copy_from_slice(cdb);
    g.mem.write_slice(&r, GuestAddress(req)).unwrap();
    let mut descs = vec![(req, REQ_LEN as u32, false)];
    if !out.is_empty() {
        let a = g.alloc(out.len());
        g.mem.write_slice(out, GuestAddress(a)).unwrap();
        descs.push((a, out.len() as u32, false));
    }
    let resp = g.alloc(RESP_LEN);
    g.mem
        .write_slice(&[0xee; RESP_LEN], GuestAddress(resp))
        .unwrap();
    descs.push((resp, RESP_LEN as u32, true));
    let mut data = 0;
    if in_len > 0 {
        data = g.alloc(in_len);
        descs.push((data, in_len as u32, true));
    }
    (g.post(q, &descs), resp, data)
}

fn reply(g: &Guest, resp: u64, data: u64, in_len: usize) -> ScsiReply {
    let mut r = [0u8; RESP_LEN];
    g.mem.read_slice(&mut r, GuestAddress(resp)).unwrap();
    let sense_len = u32::from_le_bytes(r[0..4].try_into().unwrap()) as usize;
    let mut d = vec![0; in_len];
    if in_len > 0 {
        g.mem.read_slice(&mut d, GuestAddress(data)).unwrap();
    }
    ScsiReply {
        response: r[11],
        status: r[10],
        sense: r[12..12 + sense_len.min(96)].to_vec(),
        data: d,
    }
}

fn cmd(g: &mut Guest, d: &Daemon, target: u8, cdb: &[u8], out: &[u8], in_len: usize) -> ScsiReply {
    g.bump = 1 << 20;
    let (head, resp, data) = post_cmd(g, RQ, target, cdb, out, in_len);
    let (id, _) = g.wait_used(RQ, d);
    assert_eq!(id, head);
    reply(g, resp, data, in_len)
}

/// TEST UNIT READY until the power-on unit attention is consumed.
fn clear_ua(g: &mut Guest, d: &Daemon) {
    let r = cmd(g, d, 0, &[0; 6], &[], 0);
    assert_eq!(
        (r.response, r.status),
        (S_OK, CHECK_CONDITION),
        "POWER ON UA first"
    );
    let key = if r.sense[0] & 0x7f >= 0x72 {
        r.sense[1]
    } else {
        r.sense[2]
    } & 0x0f;
    assert_eq!(key, 6, "UNIT ATTENTION");
    let r = cmd(g, d, 0, &[0; 6], &[], 0);
    assert_eq!((r.response, r.status), (S_OK, GOOD));
}

fn write10(lba: u32, blocks: u16) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = 0x2a;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

fn read10(lba: u32, blocks: u16) -> [u8; 10] {
    let mut c = write10(lba, blocks);
    c[0] = 0x28;
    c
}

const SYNC_CACHE10: [u8; 10] = [0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0];

fn disk(c: &serde_json::Value) -> &serde_json::Value {
    &c["disks"][0]
}

#[test]
fn features_as_qemu_acks_them_including_change_are_accepted() {
    let mut d = start(&[""], &["--queues", "2"]);
    let g = Guest::connect_with(&d.socket, 4, WANT, proto());
    assert_eq!(
        g.features & WANT,
        WANT,
        "CHANGE, HOTPLUG, VERSION_1, EVENT_IDX offered"
    );
    assert!(g.fe.get_features().unwrap() & (1 << 0) == 0, "no INOUT");
    assert_eq!(d.terminate().code(), Some(0));
}

#[test]
fn commands_flush_mode_select_and_exit() {
    let mut d = start(&[""], &[]);
    let mut g = Guest::connect_with(&d.socket, 3, WANT, proto());
    clear_ua(&mut g, &d);

    let inq = cmd(&mut g, &d, 0, &[0x12, 0, 0, 0, 36, 0], &[], 36);
    assert_eq!((inq.response, inq.status), (S_OK, GOOD));
    assert_eq!(&inq.data[8..14], b"VMSTOR");

    let data = pattern(9, 4096);
    let w = cmd(&mut g, &d, 0, &write10(8, 8), &data, 0);
    assert_eq!((w.response, w.status), (S_OK, GOOD));
    let c0 = d.counters_until("the write", |c| num(&disk(c)["writes"]) == 1);
    let s0 = num(&disk(&c0)["fdatasyncs"]);
    let f = cmd(&mut g, &d, 0, &SYNC_CACHE10, &[], 0);
    assert_eq!((f.response, f.status), (S_OK, GOOD));
    let c1 = d.counters_until("the flush", |c| num(&disk(c)["flushes_asked"]) == 1);
    assert_eq!(
        num(&disk(&c1)["fdatasyncs"]),
        s0 + 1,
        "SYNCHRONIZE CACHE is one fdatasync"
    );
    let r = cmd(&mut g, &d, 0, &read10(8, 8), &[], 4096);
    assert_eq!((r.response, r.status), (S_OK, GOOD));
    assert_eq!(r.data, data);

    // MODE SENSE(10), DBD, caching page; clear WCE; MODE SELECT(10) PF=1.
    let ms = cmd(
        &mut g,
        &d,
        0,
        &[0x5a, 0x08, 0x08, 0, 0, 0, 0, 0, 64, 0],
        &[],
        64,
    );
    assert_eq!((ms.response, ms.status), (S_OK, GOOD));
    let page_len = usize::from(ms.data[9]) + 2;
    let mut page = ms.data[8..8 + page_len].to_vec();
    assert_eq!(page[0] & 0x3f, 0x08);
    assert_ne!(page[2] & 0x04, 0, "WCE=1");
    page[0] &= 0x3f; // PS is reserved in MODE SELECT
    page[2] &= !0x04;
    let mut list = vec![0u8; 8];
    list.extend_from_slice(&page);
    // A volatile write first, so the switch has something to flush.
    assert_eq!(
        cmd(&mut g, &d, 0, &write10(16, 1), &pattern(3, 512), 0).status,
        GOOD
    );
    let c2 = d.counters_until("the second write", |c| num(&disk(c)["writes"]) == 2);
    let s2 = num(&disk(&c2)["fdatasyncs"]);
    let len = list.len() as u16;
    let sel = cmd(
        &mut g,
        &d,
        0,
        &[0x55, 0x10, 0, 0, 0, 0, 0, (len >> 8) as u8, len as u8, 0],
        &list,
        0,
    );
    assert_eq!(
        (sel.response, sel.status),
        (S_OK, GOOD),
        "sense {:02x?}",
        sel.sense
    );
    let c3 = d.counters_until("write cache off", |c| disk(c)["write_cache"] == false);
    assert_eq!(
        num(&disk(&c3)["fdatasyncs"]),
        s2 + 1,
        "clearing WCE flushed"
    );

    // Nothing at target 1.
    let bad = cmd(&mut g, &d, 1, &[0; 6], &[], 0);
    assert_eq!(bad.response, S_BAD_TARGET);

    assert_eq!(d.terminate().code(), Some(0), "log:\n{}", d.log());
    let c = d.counters()["exports"][0].clone();
    assert_eq!(c["kind"], "vhost-user-scsi");
    assert_eq!(disk(&c)["lun"], 0);
    assert_eq!(&d.image_bytes()[4096..8192], &data[..]);
}

#[test]
fn two_luns_are_two_disks() {
    let mut d = start(&["", ",cache=writethrough,io-engine=threads"], &[]);
    let mut g = Guest::connect_with(&d.socket, 3, WANT, proto());
    clear_ua(&mut g, &d);
    // REPORT LUNS lists both.
    let rl = cmd(
        &mut g,
        &d,
        0,
        &[0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
        &[],
        256,
    );
    assert_eq!((rl.response, rl.status), (S_OK, GOOD));
    assert_eq!(
        u32::from_be_bytes(rl.data[0..4].try_into().unwrap()),
        16,
        "two 8-byte entries"
    );
    let c = d.counters_until("counters", |c| {
        c["disks"].as_array().is_some_and(|a| a.len() == 2)
    });
    assert_eq!(c["disks"][1]["write_cache"], false);
    assert_eq!(c["disks"][1]["lun"], 1);
    // Each LUN has its own executor: the default io_uring (or the pool
    // with a reason), and the thread pool asked for on LUN 1.
    assert_eq!(c["disks"][1]["executor"], "threads");
    assert!(c["disks"][1]["io_uring_fallback"].is_null());
    let lun0 = (
        &c["disks"][0]["executor"],
        &c["disks"][0]["io_uring_fallback"],
    );
    assert!(
        (lun0.0 == "io_uring" && lun0.1.is_null()) || (lun0.0 == "threads" && lun0.1.is_string()),
        "{lun0:?}"
    );
    assert!(d.log().contains("lun=1"), "{}", d.log());
    assert_eq!(d.terminate().code(), Some(0));
}

#[test]
fn a_held_write_waits_for_sigusr2_and_a_queue_stop_resets_it() {
    let d = start(&[",werror=stop,x-inject-fault=1:enospc"], &[]);
    let mut g = Guest::connect_with(&d.socket, 3, WANT, proto());
    clear_ua(&mut g, &d);
    g.bump = 1 << 20;
    let data = pattern(5, 4096);
    let (head, resp, _) = post_cmd(&mut g, RQ, 0, &write10(0, 8), &data, 0);
    d.counters_until("the held write", |c| num(&disk(c)["held_now"]) == 1);
    assert!(g.try_used(RQ).is_none());
    d.signal(libc::SIGUSR2);
    let (id, _) = g.wait_used(RQ, &d);
    assert_eq!(id, head);
    let r = reply(&g, resp, 0, 0);
    assert_eq!(
        (r.response, r.status),
        (S_OK, GOOD),
        "retried after SIGUSR2"
    );
    assert_eq!(&d.image_bytes()[..4096], &data[..]);

    // Another held write, then the front end stops the queue: the command
    // ends with VIRTIO_SCSI_S_RESET before GET_VRING_BASE is answered.
    drop(d);
    let mut d = start(&[",werror=stop,x-inject-fault=1:eio"], &[]);
    let mut g = Guest::connect_with(&d.socket, 3, WANT, proto());
    // The UA check issues no host I/O, so host op 1 is the write.
    clear_ua(&mut g, &d);
    g.bump = 1 << 20;
    let (head, resp, _) = post_cmd(&mut g, RQ, 0, &write10(0, 8), &data, 0);
    d.counters_until("the held write", |c| num(&disk(c)["held_now"]) == 1);
    assert_eq!(g.fe.get_vring_base(RQ).unwrap(), 3, "three chains taken");
    assert_eq!(g.try_used(RQ).map(|u| u.0), Some(head));
    assert_eq!(reply(&g, resp, 0, 0).response, S_RESET);
    let c = d.counters_until("held_failed", |c| num(&c["held_failed"]) == 1);
    assert_eq!(num(&disk(&c)["held_now"]), 0);
    assert_eq!(d.terminate().code(), Some(0));
}

#[test]
fn reconnect_gets_a_fresh_power_on() {
    let mut d = start(&[""], &[]);
    {
        let mut g = Guest::connect_with(&d.socket, 3, WANT, proto());
        clear_ua(&mut g, &d);
        assert_eq!(
            cmd(&mut g, &d, 0, &write10(0, 8), &pattern(1, 4096), 0).status,
            GOOD
        );
    }
    d.counters_until("the disconnect flush", |c| num(&disk(c)["fdatasyncs"]) == 1);
    let mut g = Guest::connect_with(&d.socket, 3, WANT, proto());
    clear_ua(&mut g, &d);
    let r = cmd(&mut g, &d, 0, &read10(0, 8), &[], 4096);
    assert_eq!(r.data, pattern(1, 4096));
    assert_eq!(d.terminate().code(), Some(0));
}

#[test]
fn many_commands_in_flight_on_two_request_queues_all_complete() {
    let mut d = start(&[",io-threads=4"], &["--queues", "2"]);
    let mut g = Guest::connect_with(&d.socket, 4, WANT, proto());
    clear_ua(&mut g, &d);
    g.bump = 1 << 20;
    let mut posted = [Vec::new(), Vec::new()];
    for i in 0..32u32 {
        for (k, list) in posted.iter_mut().enumerate() {
            let block = i * 2 + k as u32;
            let p = post_cmd(
                &mut g,
                RQ + k,
                0,
                &write10(block * 8, 8),
                &pattern(block as u8, 4096),
                0,
            );
            list.push(p);
        }
    }
    for (k, list) in posted.iter().enumerate() {
        let mut heads: Vec<u16> = (0..list.len()).map(|_| g.wait_used(RQ + k, &d).0).collect();
        heads.sort_unstable();
        let mut want: Vec<u16> = list.iter().map(|p| p.0).collect();
        want.sort_unstable();
        assert_eq!(
            heads,
            want,
            "queue {}: every command completed once",
            RQ + k
        );
        for p in list {
            let r = reply(&g, p.1, 0, 0);
            assert_eq!((r.response, r.status), (S_OK, GOOD));
        }
    }
    let r = cmd(&mut g, &d, 0, &read10(0, 512), &[], 64 * 4096);
    for b in 0..64usize {
        assert_eq!(
            &r.data[b * 4096..(b + 1) * 4096],
            &pattern(b as u8, 4096)[..],
            "block {b}"
        );
    }
    assert_eq!(d.terminate().code(), Some(0));
}

//! A journaling guest workload (data writes, flush, FUA commit record, write
//! cache off/on) through the engine in every cache mode, printing the host
//! operations each guest request became.
//!
//! `cargo run -p vmstor-hostio --example journal [IMAGE]`

use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmstor_hostio::*;

type Step<'a> = (&'a str, Box<dyn Fn() -> Result<(), String> + 'a>);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = match std::env::args().nth(1) {
        Some(p) => std::path::PathBuf::from(p),
        None => {
            let p = dir.path().join("journal.img");
            std::fs::File::create(&p)?.set_len(16 << 20)?;
            p
        }
    };
    let mem = Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)])?);
    mem.write_slice(&[0x42; 65536], GuestAddress(0))?;
    let buf = |len| DataBuf::Guest(GuestBufs::new(mem.clone(), vec![(GuestAddress(0), len)]));
    for mode in CacheMode::ALL {
        let disk = Disk::open(
            &path,
            Policy::from_mode(mode),
            DiskOptions {
                trace: true,
                ..Default::default()
            },
        )?;
        println!(
            "== cache={mode} (write cache {})",
            if disk.write_cache() { "on" } else { "off" }
        );
        let steps: Vec<Step> = vec![
            (
                "write data 64 KiB @1 MiB",
                Box::new(|| go(&disk, Request::write(1 << 20, buf(65536), false, 1))),
            ),
            ("flush", Box::new(|| go(&disk, Request::flush(2)))),
            (
                "write commit record 4 KiB FUA",
                Box::new(|| go(&disk, Request::write(0, buf(4096), true, 3))),
            ),
            (
                "guest turns write cache off",
                Box::new(|| disk.set_write_cache(false).map_err(|e| e.to_string())),
            ),
            (
                "write 4 KiB",
                Box::new(|| go(&disk, Request::write(8192, buf(4096), false, 4))),
            ),
            (
                "guest turns write cache on",
                Box::new(|| disk.set_write_cache(true).map_err(|e| e.to_string())),
            ),
        ];
        for (what, f) in steps {
            let r = f();
            let ops: Vec<String> = disk.trace().take().iter().map(|e| e.to_string()).collect();
            println!(
                "  {what:<32} {:<6} {}",
                if r.is_ok() { "OK" } else { "ERROR" },
                if ops.is_empty() {
                    "(no host I/O)".into()
                } else {
                    ops.join("; ")
                }
            );
        }
        println!("  counters: {}", disk.counters());
    }
    Ok(())
}

fn go(disk: &Disk, r: Request) -> Result<(), String> {
    match disk.execute(r).map_err(|e| e.to_string())? {
        Outcome::Done(c) => c.result.map(|_| ()).map_err(|e| e.to_string()),
        Outcome::Held => Err("held".into()),
    }
}

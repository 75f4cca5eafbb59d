//! Fuel and CPU time of a C task file on generated see-workload resources, without checking
//! its result: `cargo run --release -p see-task --example shop_fuel -- FILE.c [SIZE_KIB...]`.
//! A quick way to compare variants of tasks/shop.c (the benchmark checks the result).

use std::{path::Path, time::Instant};

use see_task::{ClaimRefusal, Limits, Runtime, TaskHost};
use see_workload::{generate, Kind, Spec};

struct Host {
    id: u64,
    bytes: Vec<u8>,
}

impl TaskHost for Host {
    fn input(&self, index: u32) -> Option<u64> {
        (index == 0).then_some(self.id)
    }
    fn claim(&mut self, resource: u64) -> Result<u64, ClaimRefusal> {
        if resource == self.id {
            Ok(self.bytes.len() as u64)
        } else {
            Err(ClaimRefusal::Unavailable)
        }
    }
    fn read(&mut self, resource: u64, offset: u64, dst: &mut [u8]) -> Result<usize, ClaimRefusal> {
        if resource != self.id {
            return Err(ClaimRefusal::NotClaimed);
        }
        let start = usize::try_from(offset).map_or(self.bytes.len(), |o| o.min(self.bytes.len()));
        let n = dst.len().min(self.bytes.len() - start);
        dst[..n].copy_from_slice(&self.bytes[start..start + n]);
        Ok(n)
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let source = args.next().expect("usage: shop_fuel FILE.c [SIZE_KIB...]");
    let mut sizes: Vec<u64> = args.filter_map(|a| a.parse().ok()).collect();
    if sizes.is_empty() {
        sizes.push(1024);
    }
    let toolchain = see_task_c::Toolchain::find().expect("clang-19 and lld-19");
    let out = std::env::temp_dir().join(format!("shop_fuel_{}.wasm", std::process::id()));
    toolchain
        .compile(Path::new(&source), &out)
        .expect("the C file builds");
    let wasm = std::fs::read(&out).expect("the module was written");
    let _ = std::fs::remove_file(&out);
    let rt = Runtime::new();
    let compiled = rt.compile(&wasm).expect("the module compiles");
    let limits = Limits {
        fuel: 50_000_000_000,
        memory_bytes: 256 << 20,
    };
    for kib in sizes {
        let bytes = generate(&Spec {
            resource_id: 100,
            version: 1,
            size: kib << 10,
            kind: Kind::Data,
        })
        .expect("generated");
        let mut host = Host { id: 100, bytes };
        let t = Instant::now();
        let outcome = rt.run(&compiled, limits, &mut host);
        let ms = t.elapsed().as_secs_f64() * 1e3;
        match outcome {
            Ok(o) => println!(
                "{kib:>6} KiB: {:>10.1} Mfuel ({:.0} Mfuel/MiB), {ms:.1} ms, result {:#x}",
                o.fuel_used as f64 / 1e6,
                o.fuel_used as f64 / 1e6 / (kib as f64 / 1024.0),
                o.result
            ),
            Err(e) => println!("{kib:>6} KiB: failed: {e}"),
        }
    }
}

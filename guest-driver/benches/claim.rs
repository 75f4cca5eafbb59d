//! Host figures for the driver against the in-process device model: staged claim vs demand
//! fetch at 4 KiB, 64 KiB and 1 MiB, and staging throughput (verified MiB/s), for interrupt
//! and polling completion.
//!
//! `cargo bench -p see-guest-driver --features test-device`. These are host numbers (the
//! device is a function call away); the in-guest figures come from `cargo xtask bench`.

use std::time::{Duration, Instant};

use see_guest_driver::{testdev::TestPlatform, AppRegistry, Completion, Driver, DriverConfig};

const APP: u32 = 1;
const TASK: u64 = 1;

fn driver(mode: Completion) -> (TestPlatform, Driver<TestPlatform>) {
    let dev = TestPlatform::new();
    let key = dev.dev().key.verifying_key().to_sec1_bytes();
    let mut reg = AppRegistry::new();
    reg.register_app(APP);
    for res in 0..64 {
        reg.allow(APP, TASK, res).expect("fresh registry");
    }
    let mut cfg = DriverConfig::new(TestPlatform::window());
    cfg.completion = mode;
    cfg.store_budget = 256 << 20;
    let d = Driver::new(dev.clone(), cfg, &key, reg).expect("driver up");
    if mode == Completion::Interrupt {
        dev.dev().irq = Some(d.interrupt_handle());
    }
    (dev, d)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    for mode in [Completion::Interrupt, Completion::Polling] {
        println!("completion: {mode:?}");
        for size in [4 << 10, 64 << 10, 1 << 20] {
            let (dev, mut d) = driver(mode);
            let content = vec![0xA5u8; size];
            let runs = 15;
            let mut claims = Vec::new();
            let mut fetches = Vec::new();
            for i in 0..runs {
                let b = dev.dev().spec(APP, TASK, i, 1, &content).build();
                dev.dev().deliver(&b);
                d.poll();
                let t = Instant::now();
                let r = d.claim(APP, TASK, i).expect("staged");
                claims.push(t.elapsed());
                assert_eq!(r.content.len(), size);
                dev.dev().serve(APP, TASK, 32 + i, 1, &content);
                let t = Instant::now();
                let r = d.claim_or_fetch(APP, TASK, 32 + i, 0).expect("fetched");
                fetches.push(t.elapsed());
                assert_eq!(r.content.len(), size);
            }
            let counters = d.counters();
            let (c, f) = (median(claims), median(fetches));
            println!(
                "  {:>5} KiB: staged claim {:>9.2?}  demand fetch {:>9.2?}  ratio {:>7.0}x",
                size >> 10,
                c,
                f,
                f.as_secs_f64() / c.as_secs_f64()
            );
            println!(
                "             {runs} claims + {runs} fetches: {} register accesses (VM exits), {} notifies, {} interrupts",
                counters.register_accesses, counters.notifies, counters.interrupts
            );
        }
        let (dev, mut d) = driver(mode);
        let content = vec![0x5Au8; 1 << 20];
        let n = 32u64;
        let objects: Vec<_> = (0..n)
            .map(|i| dev.dev().spec(APP, TASK, i, 1, &content).build())
            .collect();
        let t = Instant::now();
        for o in &objects {
            dev.dev().deliver(o);
            d.poll();
        }
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(d.counters().accepted, n);
        println!(
            "  staging throughput: {n} x 1 MiB verified in {:.1} ms = {:.0} MiB/s",
            secs * 1e3,
            n as f64 / secs
        );
    }
}

//! The guest driver against a hostile device: the input is a program of device moves (honest
//! and tampered bundles, raw staging buffers and chunks, forged used elements and indices,
//! requests, evicts, ctrlq answers that lie or stop, a backend that dies) interleaved with the
//! driver's own calls (poll, claim, claim-or-fetch, parallel claims, requests, reset).
//!
//! Whatever the device does, the driver must not panic, must not touch memory outside the
//! shared window (the test device panics if it does), and every claim it grants must hand out
//! bytes an honest signer signed for that app and resource, at that version; a claim across
//! apps is always refused.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use see_guest_driver::{
    testdev::{chunk_raw, TestPlatform},
    AppRegistry, ClaimError, Completion, Driver, DriverConfig, RequestCompletion, Resource,
};

const APP_A: u32 = 1;
const APP_B: u32 = 2;
const TASK_A: u64 = 10;
const TASK_B: u64 = 20;
/// (app, task, resource): the resources the registry allows, each to one app's task.
const OWNED: [(u32, u64, u64); 3] = [
    (APP_A, TASK_A, 100),
    (APP_A, TASK_A, 101),
    (APP_B, TASK_B, 200),
];
/// Longest content the program asks for (keeps an iteration fast).
const MAX_CONTENT: usize = 8 << 10;

/// Reads the program's bytes in order; zeros once they run out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = (self.byte() as usize).min(max).min(self.0.len());
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        taken.to_vec()
    }
    fn owned(&mut self) -> (u32, u64, u64) {
        OWNED[self.byte() as usize % OWNED.len()]
    }
}

fn content(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29) ^ salt)
        .collect()
}

/// Every (app, resource, version) an honest signer signed, with its bytes.
type Honest = BTreeMap<(u32, u64, u64), Vec<u8>>;

/// A granted claim must be of bytes the honest signer signed for the claiming app.
fn check_claim(honest: &Honest, app: u32, task: u64, r: &Resource) {
    assert_eq!(
        (r.app_id, r.task_id),
        (app, task),
        "granted to another app or task"
    );
    assert!(
        OWNED.contains(&(app, task, r.resource_id)),
        "granted a resource the registry does not allow"
    );
    let signed = honest
        .get(&(app, r.resource_id, r.version))
        .expect("a granted claim of bytes nobody signed");
    assert_eq!(
        &r.content[..],
        &signed[..],
        "granted bytes differ from the signed ones"
    );
}

fn check_result(honest: &Honest, app: u32, task: u64, res: u64, r: Result<Resource, ClaimError>) {
    match r {
        Ok(r) => {
            assert_eq!(r.resource_id, res);
            check_claim(honest, app, task, &r);
        }
        Err(ClaimError::AccessDenied { .. }) => assert!(!OWNED.contains(&(app, task, res))),
        Err(_) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let dev = TestPlatform::new();
    let pubkey = dev.dev().key.verifying_key().to_sec1_bytes();
    let mut registry = AppRegistry::new();
    registry.register_app(APP_A);
    registry.register_app(APP_B);
    for (app, task, res) in OWNED {
        registry.allow(app, task, res).expect("allow");
    }
    let mut config = DriverConfig::new(TestPlatform::window());
    config.completion = if input.byte() & 1 == 0 {
        Completion::Interrupt
    } else {
        Completion::Polling
    };
    config.staging_buffers = 16;
    config.ctrl_chains = 16;
    config.store_budget = 64 << 10;
    config.max_demands = 1 + u16::from(input.byte() % 4);
    config.ctrl_timeout_ns = 5_000_000;
    config.demand_timeout_ns = 20_000_000;
    let Ok(mut driver) = Driver::new(dev.clone(), config, &pubkey, registry) else {
        return;
    };
    dev.dev().irq = Some(driver.interrupt_handle());
    let mut honest = Honest::new();
    let mut request_id = 0u64;

    for _ in 0..64 {
        if input.0.is_empty() {
            break;
        }
        match input.byte() % 16 {
            // An honest bundle, delivered in chunks, and served on demand from now on.
            0 | 1 => {
                let (app, task, res) = input.owned();
                let version = 1 + u64::from(input.byte() % 4);
                let len = 1 + input.u16() as usize % MAX_CONTENT;
                let bytes = content(len, input.byte());
                let mut d = dev.dev();
                let bundle = d.spec(app, task, res, version, &bytes).build();
                d.serve(app, task, res, version, &bytes);
                if d.posted(1) >= 1 {
                    d.deliver(&bundle);
                }
                honest.insert((app, res, version), bytes);
            }
            // An honest bundle with one byte flipped.
            2 => {
                let (app, task, res) = input.owned();
                let bytes = content(1 + input.u16() as usize % MAX_CONTENT, input.byte());
                let at = input.u16() as usize;
                let mut d = dev.dev();
                let mut bundle = d.spec(app, task, res, 1, &bytes).build();
                let i = at % bundle.len();
                bundle[i] ^= 1 | input.byte();
                if d.posted(1) >= 1 {
                    d.deliver(&bundle);
                }
            }
            // Raw bytes in the next staging buffer, with any used length.
            3 => {
                let bytes = input.bytes(255);
                let len = input.u32();
                let mut d = dev.dev();
                if d.posted(1) >= 1 {
                    let _ = d.stage_raw(&bytes, len);
                }
            }
            // One chunk of any stream, offset and total.
            4 => {
                let stream = u64::from(input.byte() % 4);
                // Within its object (the encoder refuses others; raw bytes cover those).
                let total = input.u32() % (1 << 20);
                let offset = input.u32() % (total + 1);
                let mut bytes = input.bytes(255);
                bytes.truncate((total - offset) as usize);
                let chunk = chunk_raw(stream, total, offset, &bytes);
                let mut d = dev.dev();
                if d.posted(1) >= 1 {
                    let _ = d.stage_raw(&chunk, chunk.len() as u32);
                }
            }
            // A forged used element, or a used index that jumps.
            5 => {
                let q = usize::from(input.byte() % 3);
                let (id, len) = (u32::from(input.u16()), input.u32());
                let mut d = dev.dev();
                if d.queue_ready(q) {
                    d.push_used(q, id, len);
                }
            }
            6 => {
                let q = usize::from(input.byte() % 3);
                let mut d = dev.dev();
                let idx = d.used_idx[q].wrapping_add(input.u16());
                if d.queue_ready(q) {
                    d.set_used_idx(q, idx);
                }
            }
            // A request (args of any bytes) or an evict on requestq.
            7 => {
                let app = u32::from(input.byte() % 3);
                let kind = u32::from(input.byte());
                let args = input.bytes(64);
                let mut d = dev.dev();
                if d.posted(0) >= 1 {
                    request_id += 1;
                    d.send_request(request_id, 1, app, kind, &args);
                }
            }
            8 => {
                let (app, _, res) = input.owned();
                let app = if input.byte() & 1 == 0 {
                    app
                } else {
                    APP_A + APP_B - app
                };
                let mut d = dev.dev();
                if d.posted(0) >= 1 {
                    let _ = d.send_evict(app, res);
                }
            }
            // How ctrlq answers: stop answering, refuse demands, answer in reverse, die later.
            9 => {
                let mut d = dev.dev();
                match input.byte() % 5 {
                    0 => d.answer = !d.answer,
                    1 => d.demand_status = u32::from(input.byte() % 4),
                    2 => d.reverse_demands = !d.reverse_demands,
                    3 => d.deliver_demands = !d.deliver_demands,
                    _ => d.die_after_demands = Some(usize::from(input.byte() % 4)),
                }
            }
            10 => dev.dev().needs_reset(),
            // The driver's side.
            11 => driver.poll(),
            12 => {
                let (app, _, res) = input.owned();
                let app = if input.byte() & 1 == 0 {
                    app
                } else {
                    APP_A + APP_B - app
                };
                let task = if app == APP_A { TASK_A } else { TASK_B };
                let r = driver.claim(app, task, res);
                check_result(&honest, app, task, res, r);
            }
            13 => {
                let (app, task, res) = input.owned();
                let min_version = u64::from(input.byte() % 5);
                let r = driver.claim_or_fetch(app, task, res, min_version);
                check_result(&honest, app, task, res, r);
            }
            14 => {
                let app = if input.byte() & 1 == 0 { APP_A } else { APP_B };
                let task = if app == APP_A { TASK_A } else { TASK_B };
                let wanted: Vec<(u64, u64)> = OWNED
                    .iter()
                    .filter(|_| input.byte() & 1 == 1)
                    .map(|&(_, t, r)| (t, r))
                    .collect();
                let honest = &honest;
                let _ = driver.claim_each(app, &wanted, 0, |i, r| {
                    assert!(i < wanted.len());
                    assert_eq!(r.resource_id, wanted[i].1);
                    check_claim(honest, app, task, &r);
                });
            }
            _ => match input.byte() % 3 {
                0 => {
                    let _ = driver.reset();
                }
                1 => {
                    if let Some(request) = driver.next_request() {
                        let _ = driver.complete_request(&RequestCompletion {
                            request_id: request.request_id,
                            status: 0,
                            total_ns: 1,
                            tasks: Vec::new(),
                        });
                    }
                }
                _ => driver.flush(),
            },
        }
    }
    // A cross-app claim is never granted, whatever happened.
    assert!(driver.claim(APP_B, TASK_B, 100).is_err());
});

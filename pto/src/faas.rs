//! A synthetic function platform whose working set exceeds the guest's cache: a generated
//! service catalogue and Zipf-popular sessions over it, both seeded.
//!
//! [`FaasSpec::catalogue`] builds `apps` apps of `functions` request types each. Every app
//! has `code_per_app` shared code resources (its runtime and libraries), claimed by an init
//! task all its functions share; every function has `data_per_function` data resources of its
//! own, claimed by its handler after the init. Sizes are drawn log-uniformly from the spec's
//! ranges: with the defaults, 40 apps x 6 functions give 320 resources and about 130 MiB, far
//! above a 16 MiB staging budget. Each function links (`next`) to the following function of
//! its app, its workflow.
//!
//! [`FaasSpec::wasm_catalogue`] is the same platform shaped for Wasm tasks, where every task
//! runs the one code resource it has (its module) over its data: an app's first shared code
//! resource is its init's module and the rest of its shared code (its libraries) are the
//! init's inputs; every function gets a small module of its own, which its handler runs over
//! the function's data. Each task's fuel and memory limits follow the largest inputs the spec
//! can give it.
//!
//! [`FaasSpec::sessions`] draws sessions over that catalogue: the first request, and each
//! later one with probability `1 - chain`, comes from a Zipf law over the request types
//! (exponent `zipf`, ranks in a seeded order), so popularity has a long tail; otherwise the
//! request continues its app's workflow. The sessions carry no true distributions (the
//! evaluation prints no Bayes limit for them).
//!
//! Everything here is synthetic and must be reported as such. The catalogue is simulated by
//! `pto simulate --catalogue-preset faas` and served in the VM by `see-demo
//! --catalogue-preset faas`, which writes it as metadata for see-daemon
//! ([`ServiceCatalogue::to_toml`]); its app registry, the guest's `see.allow` command-line entry
//! (see-daemon's `guest::cmdline`), takes about 3.3 KiB at the default size, well within the
//! guest's 64 KiB command line.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution as _, Exp};
use virtio_prefetch_wire::ResourceKind;

use crate::{
    generate::MAX_THINK_MS,
    metadata::{Origin, RequestType, Resource, ServiceCatalogue, Task, TaskLimits},
    trace::{Request, Session, Trace},
    vocab::TypeId,
};

/// Smallest and largest function module of [`FaasSpec::wasm_catalogue`], bytes: a module such
/// as `tasks/shop.c`'s (about 24 KiB) padded to its size.
pub const FUNCTION_MODULE_BYTES: (u64, u64) = (32 << 10, 128 << 10);

/// The most request types a spec may make.
pub const MAX_FUNCTIONS: usize = 10_000;

/// A [`FaasSpec`] that cannot make a platform.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FaasError {
    /// No request types, or too many.
    #[error("{apps} apps x {functions} functions: want 1 to {MAX_FUNCTIONS} request types")]
    Types {
        /// Apps asked for.
        apps: usize,
        /// Functions per app asked for.
        functions: usize,
    },
    /// An app without code.
    #[error("every app needs at least one code resource")]
    NoCode,
    /// A size range outside see-workload's, or upside down.
    #[error(
        "{what} sizes {lo}..{hi}: want {} <= smallest <= largest <= {}",
        see_workload::MIN_SIZE,
        see_workload::MAX_SIZE
    )]
    Sizes {
        /// "code" or "data".
        what: &'static str,
        /// Smallest.
        lo: u64,
        /// Largest.
        hi: u64,
    },
    /// A negative or non-finite Zipf exponent.
    #[error("zipf exponent {0}: want a number >= 0")]
    Zipf(f64),
    /// A chain probability outside 0..=1.
    #[error("chain {0}: want a probability, 0 to 1")]
    Chain(f32),
    /// Sessions too short.
    #[error("mean session length must be >= 2 and max length >= 2")]
    Length,
    /// The think time is out of range.
    #[error("think time {0} ms not in (0, {MAX_THINK_MS}]")]
    ThinkTime(f64),
    /// Sessions asked for over a catalogue another spec made.
    #[error(
        "the catalogue has {catalogue} request types, the spec {spec}: build it with this spec"
    )]
    OtherCatalogue {
        /// Request types of the catalogue.
        catalogue: usize,
        /// Request types of the spec.
        spec: usize,
    },
}

/// The shape of a synthetic function platform and of its sessions.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FaasSpec {
    /// Apps (tenants).
    pub apps: usize,
    /// Request types (functions) per app.
    pub functions: usize,
    /// Shared code resources per app.
    pub code_per_app: usize,
    /// Data resources per function.
    pub data_per_function: usize,
    /// Smallest and largest code resource, bytes (drawn log-uniformly).
    pub code_bytes: (u64, u64),
    /// Smallest and largest data resource, bytes (drawn log-uniformly).
    pub data_bytes: (u64, u64),
    /// Zipf exponent of the request types' popularity (0: uniform).
    pub zipf: f64,
    /// Probability that a request continues its app's workflow instead of a fresh draw.
    pub chain: f32,
    /// Sessions to draw.
    pub sessions: usize,
    /// Mean session length in requests (at least 2).
    pub mean_length: f32,
    /// Longest session.
    pub max_length: usize,
    /// Mean think time between requests, ms (exponential).
    pub think_ms: f64,
    /// Seed of the sizes, the popularity ranks and the sessions.
    pub seed: u64,
}

impl Default for FaasSpec {
    fn default() -> Self {
        Self {
            apps: 40,
            functions: 6,
            code_per_app: 2,
            data_per_function: 1,
            code_bytes: (256 << 10, 2 << 20),
            data_bytes: (32 << 10, 1 << 20),
            zipf: 1.0,
            chain: 0.6,
            sessions: 4000,
            mean_length: 8.0,
            max_length: 40,
            think_ms: 1000.0,
            seed: 1,
        }
    }
}

impl FaasSpec {
    fn check(&self) -> Result<(), FaasError> {
        let types = self.apps.saturating_mul(self.functions);
        if types == 0 || types > MAX_FUNCTIONS {
            return Err(FaasError::Types {
                apps: self.apps,
                functions: self.functions,
            });
        }
        if self.code_per_app == 0 {
            return Err(FaasError::NoCode);
        }
        let sizes = see_workload::MIN_SIZE..=see_workload::MAX_SIZE;
        for (what, (lo, hi)) in [("code", self.code_bytes), ("data", self.data_bytes)] {
            if !(sizes.contains(&lo) && sizes.contains(&hi) && lo <= hi) {
                return Err(FaasError::Sizes { what, lo, hi });
            }
        }
        if !(self.zipf.is_finite() && self.zipf >= 0.0) {
            return Err(FaasError::Zipf(self.zipf));
        }
        if !(0.0..=1.0).contains(&self.chain) {
            return Err(FaasError::Chain(self.chain));
        }
        if self.mean_length.is_nan() || self.mean_length < 2.0 || self.max_length < 2 {
            return Err(FaasError::Length);
        }
        if !(self.think_ms > 0.0 && self.think_ms <= MAX_THINK_MS) {
            return Err(FaasError::ThinkTime(self.think_ms));
        }
        Ok(())
    }

    /// How sessions of this spec are described in reports: always as synthetic.
    pub fn describe(&self) -> String {
        format!(
            "synthetic function-platform workload ({} apps x {} functions, zipf {}, chain {}, {} sessions, seed {})",
            self.apps, self.functions, self.zipf, self.chain, self.sessions, self.seed
        )
    }

    /// The request type name of function `f` of app `a`.
    fn name(a: usize, f: usize) -> String {
        format!("a{a:03}-f{f}")
    }

    /// The catalogue (named `faas-synthetic`): every app's init task claims its shared code,
    /// every function's handler claims its own data after the init.
    pub fn catalogue(&self) -> Result<ServiceCatalogue, FaasError> {
        self.build(false)
    }

    /// The catalogue for Wasm tasks (named `faas-synthetic-wasm`): every task has exactly one
    /// code resource, its module. The app's shared code and the functions' data are those of
    /// [`FaasSpec::catalogue`] (same ids, sizes and order), except that an app's shared code
    /// after the first is data (`aNNN-libC`, the libraries the init's module reads); each
    /// function adds its module `aNNN-fF-code` ([`FUNCTION_MODULE_BYTES`]) to its handler.
    /// Limits: [`FaasSpec::wasm_limits`].
    pub fn wasm_catalogue(&self) -> Result<ServiceCatalogue, FaasError> {
        self.build(true)
    }

    /// The fuel and memory of a Wasm task whose inputs (workload resources, worked on one at a
    /// time) total at most `input_bytes`, the largest being at most `largest`: three times the
    /// fuel the shop task (`tasks/shop.c`) is charged, about 340 per input byte, and room for the
    /// largest resource read whole and inflated (about 3x), with slack for the module's own
    /// memory.
    pub fn wasm_limits(input_bytes: u64, largest: u64) -> TaskLimits {
        const FUEL_PER_BYTE: u64 = 1_000;
        const FUEL_FLOOR: u64 = 100_000_000;
        const MEMORY_SLACK_MIB: u64 = 8;
        let memory = (largest.saturating_mul(4) >> 20) + MEMORY_SLACK_MIB + 1;
        TaskLimits {
            fuel: input_bytes
                .saturating_mul(FUEL_PER_BYTE)
                .saturating_add(FUEL_FLOOR),
            memory_mib: u32::try_from(memory)
                .unwrap_or(u32::MAX)
                .min(TaskLimits::MAX_MEMORY_MIB),
        }
    }

    /// [`FaasSpec::catalogue`], or with `wasm` [`FaasSpec::wasm_catalogue`].
    fn build(&self, wasm: bool) -> Result<ServiceCatalogue, FaasError> {
        self.check()?;
        // The function modules' sizes come from a generator of their own, so the shared code
        // and the data have the same sizes in both shapes.
        let mut module_rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x3a5b_0d01_e000_0000);
        let mut module_size = move || {
            let (lo, hi) = FUNCTION_MODULE_BYTES;
            let (l, h) = ((lo as f64).ln(), (hi as f64).ln());
            ((l + module_rng.random::<f64>() * (h - l)).exp().round() as u64).clamp(lo, hi)
        };
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0xfaa5_ca7a_1095_0000);
        let mut size = |(lo, hi): (u64, u64)| {
            let (l, h) = ((lo as f64).ln(), (hi as f64).ln());
            ((l + rng.random::<f64>() * (h - l)).exp().round() as u64).clamp(lo, hi)
        };
        let (mut resources, mut tasks, mut requests) = (Vec::new(), Vec::new(), Vec::new());
        let mut resource = |id: String, kind, size| {
            resources.push(Resource {
                id,
                kind,
                size,
                version: 1,
                origin: Origin::Workload,
            });
            resources.len() - 1
        };
        let (init_limits, handler_limits) = if wasm {
            let libraries = self.code_per_app as u64 - 1;
            let data = self.data_per_function as u64;
            (
                Self::wasm_limits(
                    libraries.saturating_mul(self.code_bytes.1),
                    self.code_bytes.1,
                ),
                Self::wasm_limits(data.saturating_mul(self.data_bytes.1), self.data_bytes.1),
            )
        } else {
            (TaskLimits::default(), TaskLimits::default())
        };
        for a in 0..self.apps {
            let code = (0..self.code_per_app)
                .map(|c| {
                    let size = size(self.code_bytes);
                    if wasm && c > 0 {
                        resource(format!("a{a:03}-lib{c}"), ResourceKind::Data, size)
                    } else {
                        resource(format!("a{a:03}-code{c}"), ResourceKind::Code, size)
                    }
                })
                .collect();
            let init = tasks.len();
            tasks.push(Task {
                id: format!("a{a:03}-init"),
                after: Vec::new(),
                resources: code,
                limits: init_limits,
            });
            for f in 0..self.functions {
                let mut data: Vec<usize> = (0..self.data_per_function)
                    .map(|d| {
                        resource(
                            format!("a{a:03}-f{f}-data{d}"),
                            ResourceKind::Data,
                            size(self.data_bytes),
                        )
                    })
                    .collect();
                if wasm {
                    let module = resource(
                        format!("a{a:03}-f{f}-code"),
                        ResourceKind::Code,
                        module_size(),
                    );
                    data.insert(0, module);
                }
                tasks.push(Task {
                    id: format!("a{a:03}-f{f}-handle"),
                    after: vec![init],
                    resources: data,
                    limits: handler_limits,
                });
                requests.push(RequestType {
                    name: Self::name(a, f),
                    app: format!("a{a:03}"),
                    tasks: vec![init, tasks.len() - 1],
                    next: vec![(Self::name(a, (f + 1) % self.functions), 1.0)],
                });
            }
        }
        Ok(ServiceCatalogue::from_parts(
            if wasm {
                "faas-synthetic-wasm"
            } else {
                "faas-synthetic"
            },
            requests,
            tasks,
            resources,
        ))
    }

    /// The Zipf popularity of the `n` request types (ids `1..=n`), as cumulative weights in id
    /// order: the type of rank `r` (from 1, in a seeded order) weighs `r^-zipf`.
    fn popularity(&self, n: usize) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x21bf_0000_0000_0001);
        let mut rank: Vec<usize> = (1..=n).collect();
        for i in (1..n).rev() {
            rank.swap(i, rng.random_range(0..=i));
        }
        let mut total = 0.0;
        rank.iter()
            .map(|&r| {
                total += (r as f64).powf(-self.zipf);
                total
            })
            .collect()
    }

    /// `self.sessions` sessions over `catalogue` (made by [`FaasSpec::catalogue`] from this
    /// spec): Zipf-popular requests that continue their app's workflow with probability
    /// `chain`.
    pub fn sessions(&self, catalogue: &ServiceCatalogue) -> Result<Trace, FaasError> {
        self.check()?;
        let vocab = catalogue.vocabulary();
        let n = vocab.len() - 1;
        if n != self.apps * self.functions {
            return Err(FaasError::OtherCatalogue {
                catalogue: n,
                spec: self.apps * self.functions,
            });
        }
        let cumulative = self.popularity(n);
        let total = cumulative.last().copied().unwrap_or(1.0);
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed.wrapping_add(1));
        let think =
            Exp::new(1.0 / self.think_ms).map_err(|_| FaasError::ThinkTime(self.think_ms))?;
        let stop = 1.0 / (f64::from(self.mean_length) - 1.0);
        let mut sessions = Vec::with_capacity(self.sessions);
        for s in 0..self.sessions {
            let mut at = s as f64 * 600_000.0;
            let mut requests: Vec<Request> = Vec::new();
            while requests.len() < self.max_length
                && (requests.len() < 2 || !rng.random_bool(stop.min(1.0)))
            {
                let kind = match requests.last() {
                    Some(prev) if rng.random::<f32>() < self.chain => {
                        // Ids are 1 + app * functions + function, in catalogue order.
                        let i = prev.kind as usize - 1;
                        let (a, f) = (i / self.functions, i % self.functions);
                        (a * self.functions + (f + 1) % self.functions + 1) as TypeId
                    }
                    _ => {
                        let u = rng.random::<f64>() * total;
                        (cumulative.partition_point(|&c| c <= u).min(n - 1) + 1) as TypeId
                    }
                };
                if !requests.is_empty() {
                    at += think.sample(&mut rng);
                }
                requests.push(Request::new(kind, at as i64));
            }
            sessions.push(Session {
                key: format!("faas-{s:06}"),
                user: None,
                requests,
                truth: Vec::new(),
            });
        }
        Ok(Trace {
            vocab,
            sessions,
            attributes: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn the_catalogue_shares_code_within_an_app_and_exceeds_the_cache() {
        let spec = FaasSpec::default();
        let cat = spec.catalogue().unwrap();
        assert_eq!(cat, spec.catalogue().unwrap(), "seeded");
        assert_ne!(
            cat,
            FaasSpec {
                seed: 2,
                ..spec.clone()
            }
            .catalogue()
            .unwrap()
        );
        assert_eq!(cat.requests.len(), 240);
        assert_eq!(cat.resources.len(), 40 * 2 + 240);
        let total: u64 = cat.resources.iter().map(|r| r.size).sum();
        assert!(total > 64 << 20, "{total} bytes, far above a 16 MiB budget");
        // Two functions of one app share its code and nothing else; two apps share nothing.
        let ids = |name: &str| -> Vec<String> {
            cat.resources_of(name)
                .iter()
                .map(|r| r.id.clone())
                .collect()
        };
        let (f0, f1, other) = (ids("a003-f0"), ids("a003-f1"), ids("a004-f0"));
        assert_eq!(f0.len(), 3);
        assert_eq!(f0[..2], f1[..2]);
        assert_ne!(f0[2], f1[2]);
        assert!(other.iter().all(|r| !f0.contains(r)));
        assert_eq!(cat.request("a003-f5").unwrap().next[0].0, "a003-f0");
        assert_eq!(cat.request("a003-f5").unwrap().app, "a003");
        // The tasks are in dependency order and every workload size is in range.
        let tasks = cat.tasks_of("a003-f1");
        assert_eq!(tasks[0].id, "a003-init");
        assert_eq!(
            tasks[1].after,
            vec![cat.request("a003-f1").unwrap().tasks[0]]
        );
        for r in &cat.resources {
            assert!((see_workload::MIN_SIZE..=see_workload::MAX_SIZE).contains(&r.size));
            let want = match r.kind {
                ResourceKind::Code => spec.code_bytes,
                ResourceKind::Data => spec.data_bytes,
            };
            assert!((want.0..=want.1).contains(&r.size), "{r:?}");
        }
    }

    #[test]
    fn the_wasm_catalogue_gives_every_task_one_module_and_the_same_other_bytes() {
        let spec = FaasSpec::default();
        let (cat, wasm) = (spec.catalogue().unwrap(), spec.wasm_catalogue().unwrap());
        assert_eq!(wasm.name, "faas-synthetic-wasm");
        assert_eq!(wasm.requests.len(), cat.requests.len());
        assert_eq!(wasm.resources.len(), cat.resources.len() + 240);
        for task in &wasm.tasks {
            let kinds: Vec<_> = task
                .resources
                .iter()
                .map(|&r| wasm.resources[r].kind)
                .collect();
            let code = kinds.iter().filter(|&&k| k == ResourceKind::Code).count();
            assert_eq!(code, 1, "{}: {kinds:?}", task.id);
        }
        // Every resource of the native shape is there with its size, in its app's and
        // function's order; only the shared code after the first became data.
        let by_size = |c: &ServiceCatalogue, name: &str| -> Vec<(u64, ResourceKind)> {
            c.resources_of(name)
                .iter()
                .filter(|r| !r.id.ends_with("-code"))
                .map(|r| (r.size, r.kind))
                .collect()
        };
        for name in ["a000-f0", "a017-f3", "a039-f5"] {
            let (native, shaped) = (by_size(&cat, name), by_size(&wasm, name));
            assert_eq!(native.len(), shaped.len(), "{name}");
            for (i, (n, w)) in native.iter().zip(&shaped).enumerate() {
                assert_eq!(n.0, w.0, "{name} resource {i}");
                let kind = if i == 1 { ResourceKind::Data } else { n.1 };
                assert_eq!(kind, w.1, "{name} resource {i}");
            }
        }
        for r in wasm.resources.iter().filter(|r| r.id.ends_with("-code")) {
            let (lo, hi) = FUNCTION_MODULE_BYTES;
            assert!((lo..=hi).contains(&r.size), "{r:?}");
        }
        // Limits: fuel for three times the shop task's work on the largest inputs, memory for
        // the largest input inflated; the native catalogue keeps the defaults.
        let init = wasm.tasks_of("a000-f0")[0].limits;
        assert_eq!(init.fuel, (2 << 20) * 1_000 + 100_000_000);
        assert_eq!(init.memory_mib, 8 + 8 + 1);
        let handler = wasm.tasks_of("a000-f0")[1].limits;
        assert_eq!(handler.fuel, (1 << 20) * 1_000 + 100_000_000);
        assert!(
            handler.fuel > (3 * 340) << 20,
            "three times the shop task's fuel a MiB"
        );
        assert_eq!(handler.memory_mib, 4 + 8 + 1);
        assert!(cat.tasks.iter().all(|t| t.limits == TaskLimits::default()));
        assert_eq!(spec.sessions(&wasm).unwrap(), spec.sessions(&cat).unwrap());
    }

    #[test]
    fn popularity_has_a_long_tail_and_workflows_chain() {
        let spec = FaasSpec {
            chain: 0.0,
            sessions: 3000,
            ..FaasSpec::default()
        };
        let cat = spec.catalogue().unwrap();
        let t = spec.sessions(&cat).unwrap();
        assert_eq!(t, spec.sessions(&cat).unwrap(), "seeded");
        let mut counts: HashMap<TypeId, usize> = HashMap::new();
        for r in t.sessions.iter().flat_map(|s| &s.requests) {
            *counts.entry(r.kind).or_default() += 1;
        }
        let mut c: Vec<usize> = counts.values().copied().collect();
        c.sort_unstable_by(|a, b| b.cmp(a));
        let all: usize = c.iter().sum();
        // Zipf(1) over 240 types: the top 10 % carry about 60 % of the requests, the rank-1
        // type about 2x the rank-2 one.
        let top: usize = c[..24].iter().sum();
        assert!(top * 2 > all, "top 24 types: {top} of {all}");
        assert!(c[0] as f64 > 1.5 * c[1] as f64, "{:?}", &c[..3]);
        assert!(
            counts.len() > 200,
            "the tail is drawn too: {}",
            counts.len()
        );
        // Uniform popularity has no such head.
        let flat = FaasSpec {
            zipf: 0.0,
            ..spec.clone()
        }
        .sessions(&cat)
        .unwrap();
        let mut c0: HashMap<TypeId, usize> = HashMap::new();
        for r in flat.sessions.iter().flat_map(|s| &s.requests) {
            *c0.entry(r.kind).or_default() += 1;
        }
        assert!(c0.values().max().unwrap() * 10 < c[0]);
        // With chain 1 every request follows its app's workflow.
        let chained = FaasSpec {
            chain: 1.0,
            sessions: 50,
            ..spec.clone()
        }
        .sessions(&cat)
        .unwrap();
        for s in &chained.sessions {
            assert!(s.requests.len() >= 2);
            for w in s.requests.windows(2) {
                let prev = t.vocab.name(w[0].kind).unwrap();
                let want = &cat.request(prev).unwrap().next[0].0;
                assert_eq!(t.vocab.name(w[1].kind), Some(want.as_str()));
                assert!(w[0].at_ms <= w[1].at_ms);
            }
        }
    }

    #[test]
    fn bad_specs_are_refused() {
        let ok = FaasSpec::default();
        for bad in [
            FaasSpec {
                apps: 0,
                ..ok.clone()
            },
            FaasSpec {
                code_per_app: 0,
                ..ok.clone()
            },
            FaasSpec {
                code_bytes: (1, 10),
                ..ok.clone()
            },
            FaasSpec {
                data_bytes: (1 << 20, 1 << 10),
                ..ok.clone()
            },
            FaasSpec {
                zipf: -1.0,
                ..ok.clone()
            },
            FaasSpec {
                chain: 1.5,
                ..ok.clone()
            },
            FaasSpec {
                think_ms: 0.0,
                ..ok.clone()
            },
            FaasSpec {
                mean_length: 1.0,
                ..ok.clone()
            },
        ] {
            assert!(bad.catalogue().is_err(), "{bad:?}");
        }
        // Sessions over another catalogue are refused.
        let small = FaasSpec {
            apps: 2,
            ..ok.clone()
        }
        .catalogue()
        .unwrap();
        assert!(ok.sessions(&small).is_err());
    }
}

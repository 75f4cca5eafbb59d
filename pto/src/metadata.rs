//! Service metadata: request types, their tasks (with dependencies) and the tasks' resources.
//!
//! Loaded from TOML and validated; every error names the file, the line and the field. The
//! crate embeds a default catalogue ([`ServiceCatalogue::default_catalogue`]) for the demo.
//!
//! ```toml
//! [service]
//! name = "shop"
//!
//! [[requests]]
//! name = "home"
//! tasks = ["render-home"]
//! next = ["catalog", "search"]      # the service's own links: the static graph predictor
//!
//! [[tasks]]
//! id = "render-home"
//! after = []                        # tasks that must finish first
//! resources = ["home-code"]
//! fuel = 2000000000                 # optional: its Wasm module's instruction budget a run
//! memory_mib = 64                   # optional: its Wasm module's memory limit
//!
//! [[resources]]
//! id = "home-code"
//! kind = "code"                     # or "data"
//! size = "256 KiB"                  # or a number of bytes
//! version = 1
//! origin = { type = "workload" }   # or { type = "generated", seed = 7 } or { type = "file", path = "blobs/x" }
//! ```

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
};

use rand::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use toml::Spanned;
use virtio_prefetch_wire::ResourceKind;

use crate::vocab::Vocabulary;

/// The default service catalogue, embedded (an e-commerce shop whose request types are those
/// of `../shared/data/ecom.csv.gz`).
pub const DEFAULT_CATALOGUE: &str = include_str!("catalogue/shop.toml");

/// The largest resource accepted (1 GiB).
pub const MAX_RESOURCE_SIZE: u64 = 1 << 30;

/// Errors of loading service metadata.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The file could not be read.
    #[error("cannot read {file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The TOML does not parse or has fields of the wrong shape.
    #[error("{file}: {error}")]
    Parse {
        /// The file.
        file: String,
        /// The parser's error (its message has the line and column).
        error: toml::de::Error,
    },
    /// The TOML parses but does not make a valid catalogue.
    #[error("{file}:{line}: field `{field}`: {problem}")]
    Invalid {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// The offending field.
        field: &'static str,
        /// What is wrong (the message says what to do).
        problem: CatalogueProblem,
    },
}

/// A rule of the catalogue that a field breaks ([`MetadataError::Invalid`]).
#[derive(Debug, thiserror::Error)]
pub enum CatalogueProblem {
    /// An id that is empty, too long, has spaces or is reserved.
    #[error("{0:?} is not a valid id: 1 to 128 characters, no spaces")]
    BadId(String),
    /// Two resources with one id.
    #[error("duplicate resource id {0:?}")]
    DuplicateResource(String),
    /// A resource of size 0.
    #[error("resource {0:?} has size 0; a resource is at least one byte")]
    EmptyResource(String),
    /// A size that does not parse or is too large.
    #[error(
        "want a byte count or a size such as \"256 KiB\" of at most {MAX_RESOURCE_SIZE} bytes"
    )]
    BadSize,
    /// A workload resource outside the sizes the workload generates.
    #[error(
        "a workload resource is {} to {} bytes",
        see_workload::MIN_SIZE,
        see_workload::MAX_SIZE
    )]
    WorkloadSize,
    /// A file origin that cannot be read.
    #[error("cannot read {shown}: {error}")]
    FileUnreadable {
        /// The file, as shown to the user.
        shown: String,
        /// The error.
        error: std::io::Error,
    },
    /// A file origin that is not a regular file.
    #[error("{shown} is not a regular file")]
    NotAFile {
        /// The file, as shown to the user.
        shown: String,
    },
    /// A file origin of another size than the resource's.
    #[error("{shown} has {found} bytes but the resource's size is {size}; fix `size` or the file")]
    FileSize {
        /// The file, as shown to the user.
        shown: String,
        /// Its length.
        found: u64,
        /// The resource's size.
        size: u64,
    },
    /// A task with no fuel.
    #[error("a task's fuel is at least 1 (instructions its Wasm module may run)")]
    NoFuel,
    /// A task memory limit out of range.
    #[error(
        "a task's memory_mib is 1 to {} (MiB of Wasm memory)",
        TaskLimits::MAX_MEMORY_MIB
    )]
    BadMemory,
    /// Two tasks with one id.
    #[error("duplicate task id {0:?}")]
    DuplicateTask(String),
    /// A reference to a task or resource not defined.
    #[error("unknown {what} {name:?}; define it first")]
    Unknown {
        /// `task` or `resource`.
        what: &'static str,
        /// The name referred to.
        name: String,
    },
    /// A task that depends on itself.
    #[error("task {0:?} depends on itself through `after`; break the cycle")]
    Cycle(String),
    /// Two request types with one name.
    #[error("duplicate request type {0:?}")]
    DuplicateRequest(String),
    /// A request type without tasks.
    #[error("a request type needs at least one task")]
    NoTasks,
    /// A `next` weight that is not positive.
    #[error("want a positive weight")]
    BadWeight,
    /// A `next` link to a request type not defined.
    #[error("unknown request type {0:?}")]
    UnknownNext(String),
}

/// Where a resource's bytes come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Origin {
    /// A file, relative to the metadata file's directory unless absolute; checked at load to
    /// be a readable regular file of the resource's size.
    File {
        /// Its path.
        path: PathBuf,
    },
    /// Deterministic content generated from a seed ([`generated_content`]).
    Generated {
        /// The seed.
        seed: u64,
    },
    /// Deterministic compressed records the guest apps inflate, parse and checksum
    /// ([`see_workload::generate`] from the resource's wire id, version, size and kind).
    Workload,
}

/// A resource a task needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    /// Unique id.
    pub id: String,
    /// Code or data.
    pub kind: ResourceKind,
    /// Size in bytes.
    pub size: u64,
    /// Version; a bundle of an older version is a rollback.
    pub version: u64,
    /// Where its bytes come from.
    pub origin: Origin,
}

/// A task: a unit of work a request runs, after its dependencies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    /// Unique id.
    pub id: String,
    /// Indices (into [`ServiceCatalogue::tasks`]) of the tasks that must finish first.
    pub after: Vec<usize>,
    /// Indices (into [`ServiceCatalogue::resources`]) of the resources it claims.
    pub resources: Vec<usize>,
    /// What one run of the task's Wasm module may use.
    pub limits: TaskLimits,
}

/// The fuel and memory a task's Wasm module may use in one run (`fuel` and `memory_mib` in
/// the metadata file; the defaults when absent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskLimits {
    /// The instruction budget (about one unit per Wasm instruction).
    pub fuel: u64,
    /// The most linear memory, in MiB.
    pub memory_mib: u32,
}

impl TaskLimits {
    /// Fuel when the metadata gives none: wasmi charges the shop task (`tasks/shop.c`) about
    /// 340 million a MiB of workload resource, so room for about 55 MiB.
    pub const DEFAULT_FUEL: u64 = 20_000_000_000;
    /// Memory when the metadata gives none.
    pub const DEFAULT_MEMORY_MIB: u32 = 128;
    /// The largest memory limit a task may ask for (a 32-bit Wasm memory is 4 GiB at most).
    pub const MAX_MEMORY_MIB: u32 = 4096;

    /// The memory limit in bytes.
    pub fn memory_bytes(&self) -> u64 {
        u64::from(self.memory_mib) << 20
    }
}

impl Default for TaskLimits {
    fn default() -> Self {
        Self {
            fuel: Self::DEFAULT_FUEL,
            memory_mib: Self::DEFAULT_MEMORY_MIB,
        }
    }
}

/// A request type.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestType {
    /// Unique name, as in traces.
    pub name: String,
    /// The guest app (tenant) that serves it and may claim its resources.
    pub app: String,
    /// Its tasks (indices into [`ServiceCatalogue::tasks`]) in a dependency order, with the
    /// dependencies of the listed tasks included.
    pub tasks: Vec<usize>,
    /// The request types the service links to next, with weights (static graph).
    pub next: Vec<(String, f32)>,
}

/// A validated service catalogue.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceCatalogue {
    /// Service name.
    pub name: String,
    /// Request types, in file order.
    pub requests: Vec<RequestType>,
    /// Tasks, in file order.
    pub tasks: Vec<Task>,
    /// Resources, in file order.
    pub resources: Vec<Resource>,
    /// Directory that relative file origins are resolved against.
    pub base_dir: PathBuf,
    by_name: HashMap<String, usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    service: RawService,
    #[serde(default)]
    requests: Vec<RawRequest>,
    #[serde(default)]
    tasks: Vec<RawTask>,
    #[serde(default)]
    resources: Vec<RawResource>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    app: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    name: Spanned<String>,
    app: Option<String>,
    tasks: Vec<Spanned<String>>,
    #[serde(default)]
    next: Vec<Spanned<RawNext>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawNext {
    Name(String),
    Weighted { name: String, weight: f64 },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    id: Spanned<String>,
    #[serde(default)]
    after: Vec<Spanned<String>>,
    #[serde(default)]
    resources: Vec<Spanned<String>>,
    fuel: Option<Spanned<u64>>,
    memory_mib: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResource {
    id: Spanned<String>,
    #[serde(with = "crate::wire_serde::resource_kind")]
    kind: ResourceKind,
    size: Spanned<RawSize>,
    #[serde(default = "one")]
    version: u64,
    origin: Spanned<Origin>,
}

fn one() -> u64 {
    1
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawSize {
    Bytes(i64),
    Text(String),
}

/// Parses `"4 MiB"`, `"512 KiB"`, `"1.5 MB"`, `"100 B"` or `"123"` to bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let x: f64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "" | "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        _ => return None,
    };
    let bytes = x * mult;
    (bytes.is_finite() && bytes >= 0.0 && bytes <= u64::MAX as f64).then_some(bytes as u64)
}

/// `size` bytes of deterministic content for a generated resource: the same seed and size give
/// the same bytes on every machine (ChaCha8 stream).
pub fn generated_content(seed: u64, size: u64) -> Vec<u8> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = vec![0u8; usize::try_from(size).unwrap_or(0)];
    rng.fill_bytes(&mut out);
    out
}

struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
}

impl Ctx<'_> {
    fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        field: &'static str,
        problem: CatalogueProblem,
    ) -> Result<T, MetadataError> {
        let line = self.text[..span.start.min(self.text.len())]
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1;
        Err(MetadataError::Invalid {
            file: self.file.to_owned(),
            line,
            field,
            problem,
        })
    }
}

impl ServiceCatalogue {
    /// The embedded default catalogue.
    pub fn default_catalogue() -> Self {
        // The embedded file is validated by a unit test; a failure here is a build defect.
        Self::from_toml_str(DEFAULT_CATALOGUE, "<embedded shop.toml>", Path::new("."))
            .expect("the embedded catalogue is valid (checked by a unit test)")
    }

    /// Loads and validates the catalogue at `path`.
    pub fn load(path: &Path) -> Result<Self, MetadataError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| MetadataError::Io {
            file: file.clone(),
            source,
        })?;
        // File origins resolve against the metadata file's directory, made absolute so that
        // they still do if the working directory changes later.
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let base = std::path::absolute(parent).unwrap_or_else(|_| parent.to_owned());
        Self::from_toml_str(&text, &file, &base)
    }

    /// Parses and validates `text`; `file` names it in errors, `base_dir` resolves file origins
    /// (each file origin must be a readable file of the resource's size there).
    pub fn from_toml_str(text: &str, file: &str, base_dir: &Path) -> Result<Self, MetadataError> {
        let raw: RawFile = toml::from_str(text).map_err(|error| MetadataError::Parse {
            file: file.to_owned(),
            error,
        })?;
        let cx = Ctx { file, text };
        let mut resources = Vec::new();
        let mut res_idx = HashMap::new();
        for r in raw.resources {
            check_id(&cx, &r.id, "resources.id")?;
            if res_idx
                .insert(r.id.get_ref().clone(), resources.len())
                .is_some()
            {
                return cx.err(
                    r.id.span(),
                    "resources.id",
                    CatalogueProblem::DuplicateResource(r.id.get_ref().clone()),
                );
            }
            let size = match r.size.get_ref() {
                RawSize::Bytes(b) => u64::try_from(*b).ok(),
                RawSize::Text(t) => parse_size(t),
            };
            let size = match size {
                Some(0) => {
                    return cx.err(
                        r.size.span(),
                        "resources.size",
                        CatalogueProblem::EmptyResource(r.id.get_ref().clone()),
                    )
                }
                Some(s) if s <= MAX_RESOURCE_SIZE => s,
                _ => return cx.err(r.size.span(), "resources.size", CatalogueProblem::BadSize),
            };
            if let Origin::File { path } = r.origin.get_ref() {
                check_file(&cx, base_dir, path, size, r.origin.span())?;
            }
            let workload_sizes = see_workload::MIN_SIZE..=see_workload::MAX_SIZE;
            if *r.origin.get_ref() == Origin::Workload && !workload_sizes.contains(&size) {
                return cx.err(
                    r.size.span(),
                    "resources.size",
                    CatalogueProblem::WorkloadSize,
                );
            }
            resources.push(Resource {
                id: r.id.into_inner(),
                kind: r.kind,
                size,
                version: r.version,
                origin: r.origin.into_inner(),
            });
        }
        let mut task_idx = HashMap::new();
        for (i, t) in raw.tasks.iter().enumerate() {
            check_id(&cx, &t.id, "tasks.id")?;
            if task_idx.insert(t.id.get_ref().clone(), i).is_some() {
                return cx.err(
                    t.id.span(),
                    "tasks.id",
                    CatalogueProblem::DuplicateTask(t.id.get_ref().clone()),
                );
            }
        }
        let lookup = |map: &HashMap<String, usize>, s: &Spanned<String>, field, what| {
            map.get(s.get_ref()).copied().map_or_else(
                || {
                    cx.err(
                        s.span(),
                        field,
                        CatalogueProblem::Unknown {
                            what,
                            name: s.get_ref().clone(),
                        },
                    )
                },
                Ok,
            )
        };
        let mut tasks = Vec::new();
        for t in &raw.tasks {
            let after = t
                .after
                .iter()
                .map(|a| lookup(&task_idx, a, "tasks.after", "task"))
                .collect::<Result<Vec<_>, _>>()?;
            let res = t
                .resources
                .iter()
                .map(|r| lookup(&res_idx, r, "tasks.resources", "resource"))
                .collect::<Result<Vec<_>, _>>()?;
            let mut limits = TaskLimits::default();
            if let Some(fuel) = &t.fuel {
                if *fuel.get_ref() == 0 {
                    return cx.err(fuel.span(), "tasks.fuel", CatalogueProblem::NoFuel);
                }
                limits.fuel = *fuel.get_ref();
            }
            if let Some(mib) = &t.memory_mib {
                if !(1..=TaskLimits::MAX_MEMORY_MIB).contains(mib.get_ref()) {
                    return cx.err(mib.span(), "tasks.memory_mib", CatalogueProblem::BadMemory);
                }
                limits.memory_mib = *mib.get_ref();
            }
            tasks.push(Task {
                id: t.id.get_ref().clone(),
                after,
                resources: res,
                limits,
            });
        }
        if let Some(i) = find_cycle(&tasks) {
            let t = &raw.tasks[i];
            return cx.err(
                t.id.span(),
                "tasks.after",
                CatalogueProblem::Cycle(t.id.get_ref().clone()),
            );
        }
        let app_default = raw
            .service
            .app
            .clone()
            .unwrap_or_else(|| raw.service.name.clone());
        let names: HashSet<&String> = raw.requests.iter().map(|r| r.name.get_ref()).collect();
        let mut requests = Vec::new();
        let mut by_name = HashMap::new();
        for r in &raw.requests {
            check_id(&cx, &r.name, "requests.name")?;
            if by_name
                .insert(r.name.get_ref().clone(), requests.len())
                .is_some()
            {
                return cx.err(
                    r.name.span(),
                    "requests.name",
                    CatalogueProblem::DuplicateRequest(r.name.get_ref().clone()),
                );
            }
            if r.tasks.is_empty() {
                return cx.err(r.name.span(), "requests.tasks", CatalogueProblem::NoTasks);
            }
            let listed = r
                .tasks
                .iter()
                .map(|t| lookup(&task_idx, t, "requests.tasks", "task"))
                .collect::<Result<Vec<_>, _>>()?;
            let mut next = Vec::new();
            for n in &r.next {
                let (name, weight) = match n.get_ref() {
                    RawNext::Name(s) => (s, 1.0),
                    RawNext::Weighted { name, weight } => {
                        if !(weight.is_finite() && *weight > 0.0) {
                            return cx.err(
                                n.span(),
                                "requests.next.weight",
                                CatalogueProblem::BadWeight,
                            );
                        }
                        (name, *weight)
                    }
                };
                if !names.contains(name) {
                    return cx.err(
                        n.span(),
                        "requests.next",
                        CatalogueProblem::UnknownNext(name.clone()),
                    );
                }
                next.push((name.clone(), weight as f32));
            }
            requests.push(RequestType {
                name: r.name.get_ref().clone(),
                app: r.app.clone().unwrap_or_else(|| app_default.clone()),
                tasks: topo_order(&tasks, &listed),
                next,
            });
        }
        Ok(Self {
            name: raw.service.name,
            requests,
            tasks,
            resources,
            base_dir: base_dir.to_owned(),
            by_name,
        })
    }

    /// A catalogue built in code (a generator's); the parts must be consistent, as a validated
    /// file's are: indices in range, each request's tasks in dependency order, unique names.
    pub(crate) fn from_parts(
        name: &str,
        requests: Vec<RequestType>,
        tasks: Vec<Task>,
        resources: Vec<Resource>,
    ) -> Self {
        let by_name = requests
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.clone(), i))
            .collect();
        Self {
            name: name.into(),
            requests,
            tasks,
            resources,
            base_dir: PathBuf::from("."),
            by_name,
        }
    }

    /// The request type called `name`.
    pub fn request(&self, name: &str) -> Option<&RequestType> {
        self.by_name.get(name).map(|&i| &self.requests[i])
    }

    /// The tasks of request type `name`, in dependency order.
    pub fn tasks_of(&self, name: &str) -> Vec<&Task> {
        self.request(name)
            .map(|r| r.tasks.iter().map(|&t| &self.tasks[t]).collect())
            .unwrap_or_default()
    }

    /// The distinct resources of request type `name`, in the order its tasks claim them.
    pub fn resources_of(&self, name: &str) -> Vec<&Resource> {
        let mut seen = HashSet::new();
        self.tasks_of(name)
            .into_iter()
            .flat_map(|t| t.resources.iter())
            .filter(|&&r| seen.insert(r))
            .map(|&r| &self.resources[r])
            .collect()
    }

    /// A resource by id.
    pub fn resource(&self, id: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.id == id)
    }

    /// A vocabulary holding the request types in file order.
    pub fn vocabulary(&self) -> Vocabulary {
        Vocabulary::from_names(self.requests.iter().map(|r| &r.name))
    }

    /// The bytes of `resource`: generated, or read from its file.
    pub fn content(&self, resource: &Resource) -> std::io::Result<Vec<u8>> {
        match &resource.origin {
            Origin::Generated { seed } => Ok(generated_content(*seed, resource.size)),
            Origin::File { path } => std::fs::read(self.base_dir.join(path)),
            Origin::Workload => {
                let spec = self.workload_spec(resource).ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("resource {:?} is not in this catalogue", resource.id),
                    )
                })?;
                see_workload::generate(&spec)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
            }
        }
    }

    /// Multiplies every resource size by `factor` (a positive, finite number), keeping
    /// workload resources within the generator's range: a smaller catalogue of the same shape
    /// for short end-to-end runs (the guest's work scales with the bytes).
    pub fn scale_sizes(&mut self, factor: f64) {
        let factor = if factor.is_finite() && factor > 0.0 {
            factor
        } else {
            1.0
        };
        for r in &mut self.resources {
            let size = (r.size as f64 * factor).round() as u64;
            r.size = match r.origin {
                Origin::Workload => size.clamp(see_workload::MIN_SIZE, see_workload::MAX_SIZE),
                _ => size.clamp(1, MAX_RESOURCE_SIZE),
            };
        }
    }

    /// The wire id of a resource: its index in [`ServiceCatalogue::resources`] plus one.
    pub fn resource_wire_id(&self, resource: &Resource) -> Option<u64> {
        self.resources
            .iter()
            .position(|r| r.id == resource.id)
            .map(|i| i as u64 + 1)
    }

    /// What [`see_workload::generate`] makes for `resource` (wire id, version, size, kind).
    pub fn workload_spec(&self, resource: &Resource) -> Option<see_workload::Spec> {
        Some(see_workload::Spec {
            resource_id: self.resource_wire_id(resource)?,
            version: resource.version,
            size: resource.size,
            kind: match resource.kind {
                ResourceKind::Code => see_workload::Kind::Code,
                ResourceKind::Data => see_workload::Kind::Data,
            },
        })
    }
}

/// A file origin's file: it must be a readable regular file of the declared size, at `path`
/// resolved against `base_dir` (the metadata file's directory) unless absolute.
fn check_file(
    cx: &Ctx<'_>,
    base_dir: &Path,
    path: &Path,
    size: u64,
    span: std::ops::Range<usize>,
) -> Result<(), MetadataError> {
    const FIELD: &str = "resources.origin.path";
    let full = base_dir.join(path);
    let shown = if path.is_absolute() {
        full.display().to_string()
    } else {
        format!(
            "{} (relative to the metadata file's directory {})",
            full.display(),
            base_dir.display()
        )
    };
    let file = std::fs::File::open(&full).and_then(|f| f.metadata());
    match file {
        Err(error) => cx.err(
            span,
            FIELD,
            CatalogueProblem::FileUnreadable { shown, error },
        ),
        Ok(m) if !m.is_file() => cx.err(span, FIELD, CatalogueProblem::NotAFile { shown }),
        Ok(m) if m.len() != size => cx.err(
            span,
            FIELD,
            CatalogueProblem::FileSize {
                shown,
                found: m.len(),
                size,
            },
        ),
        Ok(_) => Ok(()),
    }
}

fn check_id(cx: &Ctx<'_>, id: &Spanned<String>, field: &'static str) -> Result<(), MetadataError> {
    let s = id.get_ref();
    if s.is_empty()
        || s.len() > 128
        || s.chars().any(|c| c.is_control() || c.is_whitespace())
        || s == crate::vocab::UNKNOWN_NAME
    {
        return cx.err(id.span(), field, CatalogueProblem::BadId(s.clone()));
    }
    Ok(())
}

/// A task on a dependency cycle, if any (iterative three-colour DFS).
fn find_cycle(tasks: &[Task]) -> Option<usize> {
    let mut state = vec![0u8; tasks.len()]; // 0 new, 1 on stack, 2 done
    for root in 0..tasks.len() {
        if state[root] != 0 {
            continue;
        }
        let mut stack = vec![(root, 0usize)];
        state[root] = 1;
        while let Some(&mut (t, ref mut next)) = stack.last_mut() {
            if let Some(&d) = tasks[t].after.get(*next) {
                *next += 1;
                match state[d] {
                    1 => return Some(d),
                    0 => {
                        state[d] = 1;
                        stack.push((d, 0));
                    }
                    _ => {}
                }
            } else {
                state[t] = 2;
                stack.pop();
            }
        }
    }
    None
}

/// `listed` and their dependencies, each after its dependencies (graph is acyclic).
fn topo_order(tasks: &[Task], listed: &[usize]) -> Vec<usize> {
    fn visit(tasks: &[Task], t: usize, done: &mut Vec<usize>) {
        if done.contains(&t) {
            return;
        }
        for &d in &tasks[t].after {
            visit(tasks, d, done);
        }
        done.push(t);
    }
    let mut done = Vec::new();
    for &t in listed {
        visit(tasks, t, &mut done);
    }
    done
}

#[cfg(test)]
mod tests;

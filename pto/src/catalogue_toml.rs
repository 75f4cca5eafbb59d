//! Writes a [`ServiceCatalogue`] as the service metadata file ([`crate::metadata`]'s TOML)
//! that loads back to the same catalogue: how a generated catalogue (the synthetic function
//! platform of [`crate::faas`]) reaches a process that reads metadata from a file, such as
//! see-daemon. Every resource's origin is written as it is; a file origin keeps its path,
//! which the loader resolves against the written file's directory.

use serde::Serialize;
use virtio_prefetch_wire::ResourceKind;

use crate::metadata::{Origin, ServiceCatalogue};

/// Why a catalogue could not be written.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueTomlError {
    /// The TOML serializer refused the catalogue.
    #[error("cannot write catalogue {name} as TOML: {source}")]
    Serialize {
        /// The catalogue's name.
        name: String,
        /// The cause.
        source: toml::ser::Error,
    },
}

#[derive(Serialize)]
struct File<'a> {
    service: Service<'a>,
    requests: Vec<Request<'a>>,
    tasks: Vec<Task<'a>>,
    resources: Vec<Resource<'a>>,
}

#[derive(Serialize)]
struct Service<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct Request<'a> {
    name: &'a str,
    app: &'a str,
    tasks: Vec<&'a str>,
    next: Vec<Next<'a>>,
}

#[derive(Serialize)]
struct Next<'a> {
    name: &'a str,
    weight: f64,
}

#[derive(Serialize)]
struct Task<'a> {
    id: &'a str,
    after: Vec<&'a str>,
    resources: Vec<&'a str>,
    fuel: u64,
    memory_mib: u32,
}

#[derive(Serialize)]
struct Resource<'a> {
    id: &'a str,
    kind: &'static str,
    size: u64,
    version: u64,
    origin: &'a Origin,
}

impl ServiceCatalogue {
    /// The catalogue as a metadata file: [`ServiceCatalogue::from_toml_str`] of it gives this
    /// catalogue back (with the base directory it is loaded from).
    pub fn to_toml(&self) -> Result<String, CatalogueTomlError> {
        let task = |t: &usize| self.tasks[*t].id.as_str();
        let file = File {
            service: Service { name: &self.name },
            requests: self
                .requests
                .iter()
                .map(|r| Request {
                    name: &r.name,
                    app: &r.app,
                    tasks: r.tasks.iter().map(task).collect(),
                    next: r
                        .next
                        .iter()
                        .map(|(name, weight)| Next {
                            name,
                            weight: f64::from(*weight),
                        })
                        .collect(),
                })
                .collect(),
            tasks: self
                .tasks
                .iter()
                .map(|t| Task {
                    id: &t.id,
                    after: t.after.iter().map(task).collect(),
                    resources: t
                        .resources
                        .iter()
                        .map(|&r| self.resources[r].id.as_str())
                        .collect(),
                    fuel: t.limits.fuel,
                    memory_mib: t.limits.memory_mib,
                })
                .collect(),
            resources: self
                .resources
                .iter()
                .map(|r| Resource {
                    id: &r.id,
                    kind: match r.kind {
                        ResourceKind::Code => "code",
                        ResourceKind::Data => "data",
                    },
                    size: r.size,
                    version: r.version,
                    origin: &r.origin,
                })
                .collect(),
        };
        toml::to_string(&file).map_err(|source| CatalogueTomlError::Serialize {
            name: self.name.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::{faas::FaasSpec, metadata::ServiceCatalogue};

    #[test]
    fn a_written_catalogue_loads_back_unchanged() {
        let faas = FaasSpec {
            apps: 3,
            data_per_function: 2,
            ..FaasSpec::default()
        }
        .catalogue()
        .unwrap();
        for cat in [ServiceCatalogue::default_catalogue(), faas] {
            let text = cat.to_toml().unwrap();
            let back = ServiceCatalogue::from_toml_str(&text, "written.toml", Path::new("."))
                .unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(back, cat, "{text}");
        }
    }
}

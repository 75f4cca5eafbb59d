//! Wasm tasks on the daemon's side: the module every task of the catalogue runs, checked
//! before anything is served, and shaped into each task's code resource.
//!
//! With a task module configured ([`crate::Config::task_module`]), each task's one code
//! resource holds that module, padded with a custom section (`see.padding`, which the Wasm
//! engine skips) to the catalogue's size for the resource, so the bytes staged and fetched are
//! the catalogue's; the compile work is the module's own. The guest runs it over the task's
//! data resources (`OP_RUN_WASM`) under the task's fuel and memory limits
//! ([`see_pto::metadata::TaskLimits`]).

use std::path::{Path, PathBuf};

use see_pto::metadata::ServiceCatalogue;
use virtio_prefetch_wire::ResourceKind;

/// The name of the padding custom section.
const PADDING_SECTION: &str = "see.padding";

/// Why the task module cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TaskModuleError {
    /// The file cannot be read.
    #[error("cannot read the task module {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The module does not compile, or imports what tasks may not.
    #[error("the task module {path} is refused: {source}")]
    Refused {
        /// The file.
        path: PathBuf,
        /// Why.
        source: see_task::TaskError,
    },
    /// A task has no code resource, or several, so no one module to run.
    #[error(
        "task {task:?} has {count} code resources; a Wasm task needs exactly one (its module), \
         or run the catalogue with native tasks (--native-tasks)"
    )]
    CodeResources {
        /// The task.
        task: String,
        /// How many code resources it has.
        count: usize,
    },
}

/// The module every task runs, checked against the task interface.
#[derive(Clone, Debug)]
pub struct TaskModule {
    bytes: Vec<u8>,
}

impl TaskModule {
    /// Reads the module at `path` and checks it compiles with only the allowed imports.
    pub fn load(path: &Path) -> Result<Self, TaskModuleError> {
        let bytes = std::fs::read(path).map_err(|source| TaskModuleError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_bytes(bytes).map_err(|source| TaskModuleError::Refused {
            path: path.to_owned(),
            source,
        })
    }

    /// Checks `bytes` as a task module.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, see_task::TaskError> {
        see_task::Runtime::new().check(&bytes)?;
        Ok(Self { bytes })
    }

    /// The module's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The content of a code resource of `size` bytes: the module followed by a padding custom
    /// section that brings it to exactly `size`; the module alone when `size` leaves no room
    /// for a section (it is then larger than the catalogue says).
    pub fn content(&self, size: u64) -> Vec<u8> {
        let mut out = self.bytes.clone();
        let Some(room) = usize::try_from(size)
            .ok()
            .and_then(|s| s.checked_sub(out.len()))
        else {
            return out;
        };
        let name = PADDING_SECTION.as_bytes();
        // A section: id 0, its length (LEB128), then the name (LEB128 length, bytes) and the
        // payload. Find the payload that makes the whole exactly `room` bytes.
        for len_bytes in 1..=5 {
            let Some(body) = room.checked_sub(1 + len_bytes) else {
                break;
            };
            if leb128_len(body) != len_bytes || body < 1 + name.len() {
                continue;
            }
            out.push(0);
            push_leb128(&mut out, body);
            push_leb128(&mut out, name.len());
            out.extend_from_slice(name);
            out.resize(out.len() + body - 1 - name.len(), 0);
            debug_assert_eq!(out.len(), room + self.bytes.len());
            return out;
        }
        out
    }
}

/// Checks that every task of `cat` has exactly one code resource (the one its module goes in).
pub fn check_catalogue(cat: &ServiceCatalogue) -> Result<(), TaskModuleError> {
    for task in &cat.tasks {
        let count = task
            .resources
            .iter()
            .filter(|&&r| cat.resources[r].kind == ResourceKind::Code)
            .count();
        if count != 1 {
            return Err(TaskModuleError::CodeResources {
                task: task.id.clone(),
                count,
            });
        }
    }
    Ok(())
}

fn leb128_len(mut v: usize) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn push_leb128(out: &mut Vec<u8>, mut v: usize) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest task module: no imports, `run` sets no result.
    fn module() -> Vec<u8> {
        wat::parse_str(
            r#"(module (memory (export "memory") 1)
                 (func (export "run") (result i32) (i32.const 0)))"#,
        )
        .unwrap()
    }

    #[test]
    fn padding_gives_the_exact_size_and_the_module_still_compiles() {
        let m = TaskModule::from_bytes(module()).unwrap();
        let rt = see_task::Runtime::new();
        for size in [
            m.bytes().len() as u64 + 14,
            m.bytes().len() as u64 + 140,
            m.bytes().len() as u64 + 127 + 14,
            m.bytes().len() as u64 + 128 + 14,
            160 << 10,
            3 << 20,
        ] {
            let content = m.content(size);
            assert_eq!(content.len() as u64, size, "size {size}");
            assert!(content.starts_with(m.bytes()));
            rt.check(&content)
                .unwrap_or_else(|e| panic!("size {size}: {e}"));
        }
    }

    #[test]
    fn a_size_too_small_for_a_section_keeps_the_module_as_it_is() {
        let m = TaskModule::from_bytes(module()).unwrap();
        for size in [0, m.bytes().len() as u64, m.bytes().len() as u64 + 5] {
            assert_eq!(m.content(size), m.bytes());
        }
    }

    #[test]
    fn a_module_with_a_forbidden_import_is_refused() {
        let bad = wat::parse_str(
            r#"(module (import "env" "system" (func))
                 (memory (export "memory") 1)
                 (func (export "run") (result i32) (i32.const 0)))"#,
        )
        .unwrap();
        let err = TaskModule::from_bytes(bad).unwrap_err();
        assert!(err.to_string().contains("env.system"), "{err}");
    }

    #[test]
    fn the_shop_catalogue_has_one_code_resource_a_task() {
        check_catalogue(&ServiceCatalogue::default_catalogue()).unwrap();
    }

    #[test]
    fn the_function_platform_runs_wasm_tasks_in_its_wasm_shape_only() {
        let spec = see_pto::faas::FaasSpec::default();
        check_catalogue(&spec.wasm_catalogue().unwrap()).unwrap();
        // The native shape: the init holds two shared code resources, a handler none.
        let err = check_catalogue(&spec.catalogue().unwrap()).unwrap_err();
        assert!(
            matches!(&err, TaskModuleError::CodeResources { task, count: 2 } if task == "a000-init"),
            "{err}"
        );
        assert!(err.to_string().contains("--native-tasks"), "{err}");
    }
}

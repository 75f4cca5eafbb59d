//! Building the C task modules of `tasks/` into Wasm.
//!
//! Every `tasks/NAME.c` is one task module: it includes `tasks/include/see_task.h` (the four
//! `see.*` imports, the codes of `see_task::abi` and the `run` export) and builds, alone, with
//!
//! ```text
//! clang-19 --target=wasm32 -O2 -nostdlib -ffreestanding -mbulk-memory -Itasks/include \
//!     -fuse-ld=lld -Wl,--no-entry -Wl,--export=run -Wl,--strip-all \
//!     -Wl,-z,stack-size=65536 -o NAME.wasm NAME.c
//! ```
//!
//! `-fuse-ld=lld` links with lld-19's `wasm-ld` (`/usr/lib/llvm-19/bin/wasm-ld`). `wasm-ld`
//! exports the memory as `memory` by itself (`-Wl,--export=memory` would fail: no symbol has
//! that name). `-mbulk-memory` turns the copies and fills clang emits into
//! `memory.copy`/`memory.fill`, so a module needs no libc `memcpy`.
//!
//! `cargo xtask tasks` builds them all into `target/tasks/` (installing clang-19 and lld-19 when
//! missing); the tests and benches call [`Toolchain::compile`] themselves. A test that needs
//! the toolchain may skip when it is missing only while [`REQUIRE_ENV`] is unset: `cargo xtask
//! test` (CI) installs it and sets the variable, so CI cannot skip silently.

pub mod synthetic;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// Set (to anything) when the C toolchain must be present: tests fail instead of skipping.
pub const REQUIRE_ENV: &str = "SEE_REQUIRE_CLANG";

/// Where Debian's LLVM 19 keeps its tools.
const LLVM_BIN: &str = "/usr/lib/llvm-19/bin";

/// Why a task module could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// clang-19 or wasm-ld is not installed.
    #[error("{tool} not found (on the PATH or in {LLVM_BIN}): install Debian's clang-19 and lld-19 (`cargo xtask deps`)")]
    Missing {
        /// The tool looked for.
        tool: &'static str,
    },
    /// The compiler could not be started.
    #[error("could not run {program}: {source}")]
    Spawn {
        /// The compiler.
        program: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The compiler refused the source (its messages went to stderr).
    #[error("clang-19 failed on {source_file} ({status}); its messages are above")]
    Compile {
        /// The C file.
        source_file: PathBuf,
        /// Its exit status.
        status: std::process::ExitStatus,
    },
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The C-to-Wasm toolchain: clang-19 and lld-19's `wasm-ld`.
#[derive(Clone, Debug)]
pub struct Toolchain {
    clang: PathBuf,
}

/// `name` on the PATH, else in Debian's LLVM 19 directory as `fallback`.
fn locate(name: &'static str, fallback: &str) -> Result<PathBuf, BuildError> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    on_path
        .or_else(|| Some(Path::new(LLVM_BIN).join(fallback)).filter(|p| p.is_file()))
        .ok_or(BuildError::Missing { tool: name })
}

impl Toolchain {
    /// Finds `clang-19` and `wasm-ld-19` (on the PATH, or in `/usr/lib/llvm-19/bin`).
    pub fn find() -> Result<Self, BuildError> {
        let clang = locate("clang-19", "clang")?;
        // clang finds it itself (-fuse-ld=lld); checked here for a clear message.
        locate("wasm-ld-19", "wasm-ld")?;
        Ok(Self { clang })
    }

    /// The toolchain, or `None` when it is missing and [`REQUIRE_ENV`] is unset (the caller
    /// skips, and says so). Missing while required: the error.
    pub fn find_or_skip() -> Result<Option<Self>, BuildError> {
        match Self::find() {
            Ok(t) => Ok(Some(t)),
            Err(e) if std::env::var_os(REQUIRE_ENV).is_some() => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// The compiler's path.
    pub fn clang(&self) -> &Path {
        &self.clang
    }

    /// Compiles the C file `source` into the Wasm module `out` (written atomically: a
    /// temporary file, then a rename, so concurrent builds of one module do not collide).
    pub fn compile(&self, source: &Path, out: &Path) -> Result<(), BuildError> {
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir).map_err(|e| BuildError::Io {
                path: dir.to_path_buf(),
                source: e,
            })?;
        }
        // Unique per process and per call: tests build the same module from several threads.
        static BUILDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = out.with_extension(format!("wasm.{}.{n}.tmp", std::process::id()));
        let status = Command::new(&self.clang)
            .args([
                "--target=wasm32",
                "-O2",
                "-nostdlib",
                "-ffreestanding",
                "-mbulk-memory",
                "-std=c11",
                "-Wall",
                "-Wextra",
                "-Werror",
            ])
            .arg("-I")
            .arg(include_dir())
            .args([
                "-fuse-ld=lld",
                "-Wl,--no-entry",
                "-Wl,--export=run",
                "-Wl,--strip-all",
                "-Wl,-z,stack-size=65536",
            ])
            .arg("-o")
            .arg(&tmp)
            .arg(source)
            .status()
            .map_err(|e| BuildError::Spawn {
                program: self.clang.clone(),
                source: e,
            })?;
        if !status.success() {
            let _ = std::fs::remove_file(&tmp);
            return Err(BuildError::Compile {
                source_file: source.to_path_buf(),
                status,
            });
        }
        std::fs::rename(&tmp, out).map_err(|e| BuildError::Io {
            path: out.to_path_buf(),
            source: e,
        })
    }

    /// Compiles `tasks/NAME.c` into `out_dir/NAME.wasm` and reads the module back.
    pub fn build(&self, name: &str, out_dir: &Path) -> Result<Vec<u8>, BuildError> {
        let out = out_dir.join(format!("{name}.wasm"));
        self.compile(&source(name), &out)?;
        std::fs::read(&out).map_err(|e| BuildError::Io {
            path: out,
            source: e,
        })
    }
}

/// The directory of the C tasks (`tasks/`).
pub fn tasks_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The directory of `see_task.h`.
pub fn include_dir() -> PathBuf {
    tasks_dir().join("include")
}

/// The C file of task `name`.
pub fn source(name: &str) -> PathBuf {
    tasks_dir().join(format!("{name}.c"))
}

/// Every task's name (`tasks/NAME.c`), sorted.
pub fn names() -> Result<Vec<String>, BuildError> {
    let dir = tasks_dir();
    let io = |e| BuildError::Io {
        path: dir.clone(),
        source: e,
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|e| e == "c") {
            if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                names.push(stem.to_owned());
            }
        }
    }
    names.sort();
    Ok(names)
}

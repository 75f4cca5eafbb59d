//! `cargo xtask tasks`: builds every C task module in `tasks/` into `target/tasks/NAME.wasm`
//! with Debian's clang-19 and lld-19 (installed when missing), and checks each against the
//! task interface with `see_task::Runtime::check`, as `see-daemon store publish` will.

use std::path::PathBuf;

use crate::image;

/// Builds and checks every task: the modules' paths.
pub fn build() -> Result<Vec<PathBuf>, String> {
    crate::deps::ensure_wasm_toolchain()?;
    let toolchain = see_task_c::Toolchain::find().map_err(|e| e.to_string())?;
    let out_dir = image::target_dir().join("tasks");
    let runtime = see_task::Runtime::new();
    let mut built = Vec::new();
    for name in see_task_c::names().map_err(|e| e.to_string())? {
        eprintln!("xtask: == task {name}");
        let wasm = toolchain
            .build(&name, &out_dir)
            .map_err(|e| format!("task {name}: {e}"))?;
        runtime
            .check(&wasm)
            .map_err(|e| format!("task {name}: the module does not pass the check: {e}"))?;
        let path = out_dir.join(format!("{name}.wasm"));
        eprintln!("xtask: {} ({} bytes)", path.display(), wasm.len());
        built.push(path);
    }
    Ok(built)
}

/// `cargo xtask tasks`.
pub fn run() -> Result<(), String> {
    build().map(drop)
}

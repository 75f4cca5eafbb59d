//! Build script of the SEE kernel: rebuild when the linker script changes, and embed the PTO's
//! verifying key.
//!
//! The key is the only thing the guest trusts the host's bundles by, so it is fixed when the
//! image is built, never read at run time: `SEE_PTO_VERIFYING_KEY` names a file holding a P-384
//! public key in SEC1 uncompressed form (97 bytes, first byte 0x04). `cargo xtask image`
//! creates a development key pair and sets the variable.

use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=linker.ld");
    println!("cargo:rerun-if-env-changed=SEE_PTO_VERIFYING_KEY");
    let Some(path) = env::var_os("SEE_PTO_VERIFYING_KEY") else {
        fail("SEE_PTO_VERIFYING_KEY is not set: it must name the PTO's verifying key (SEC1, 97 bytes); `cargo xtask image` creates a development key and sets it");
    };
    let path = PathBuf::from(path);
    println!("cargo:rerun-if-changed={}", path.display());
    let key = fs::read(&path).unwrap_or_else(|e| {
        fail(&format!(
            "cannot read SEE_PTO_VERIFYING_KEY={}: {e}",
            path.display()
        ))
    });
    if key.len() != 97 || key[0] != 0x04 {
        fail(&format!(
            "SEE_PTO_VERIFYING_KEY={} is not an uncompressed SEC1 P-384 public key (97 bytes starting with 0x04; found {} bytes)",
            path.display(),
            key.len()
        ));
    }
    let out =
        PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default()).join("pto_verifying_key.bin");
    fs::write(&out, &key).unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", out.display())));
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}

//! `cargo xtask keys`: the development key pairs of the PTO.
//!
//! The backend signs bundles with the secret key (`target/see-keys/pto.key`, PKCS#8 PEM); the
//! guest kernel embeds the verifying key (`target/see-keys/pto.pub`, SEC1 uncompressed, 97
//! bytes) at build time through `SEE_PTO_VERIFYING_KEY`. A second, dedicated pair signs the
//! audit log's checkpoints (`audit.key`; `pto audit verify --key audit.pub` checks them), so
//! the audit key never signs anything the guest accepts. The pairs are generated on first use
//! and never committed; production deployments bring their own keys and build their own image.

use std::{fs, path::PathBuf};

use p384::{
    elliptic_curve::Generate,
    pkcs8::{EncodePrivateKey, LineEnding},
    SecretKey,
};

use crate::repo_root;

/// Where the development key pair lives.
pub fn keys_dir() -> PathBuf {
    repo_root().join("target/see-keys")
}

/// The secret key (PKCS#8 PEM) the backend signs with.
pub fn secret_key_path() -> PathBuf {
    keys_dir().join("pto.key")
}

/// The verifying key (SEC1, uncompressed) the guest image embeds.
pub fn verifying_key_path() -> PathBuf {
    keys_dir().join("pto.pub")
}

/// The secret key (PKCS#8 PEM) that signs the audit log's checkpoints.
pub fn audit_key_path() -> PathBuf {
    keys_dir().join("audit.key")
}

/// The audit public key (SEC1, uncompressed) `pto audit verify --key` takes.
pub fn audit_public_path() -> PathBuf {
    keys_dir().join("audit.pub")
}

/// Creates the key pairs that do not exist yet; returns the PTO verifying key's path.
pub fn ensure() -> Result<PathBuf, String> {
    ensure_pair(&audit_key_path(), &audit_public_path())?;
    ensure_pair(&secret_key_path(), &verifying_key_path())
}

/// Creates the pair at `secret_path` and `public_path` unless both exist.
fn ensure_pair(
    secret_path: &std::path::Path,
    public_path: &std::path::Path,
) -> Result<PathBuf, String> {
    if secret_path.is_file() && public_path.is_file() {
        return Ok(public_path.to_path_buf());
    }
    fs::create_dir_all(keys_dir())
        .map_err(|e| format!("cannot create {}: {e}", keys_dir().display()))?;
    let secret = SecretKey::try_generate()
        .map_err(|e| format!("the system random number generator failed: {e}"))?;
    let pem = secret
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| format!("cannot encode the secret key: {e}"))?;
    let public = secret.public_key().to_sec1_bytes();
    write_private(secret_path, pem.as_bytes())?;
    fs::write(public_path, &public)
        .map_err(|e| format!("cannot write {}: {e}", public_path.display()))?;
    eprintln!(
        "xtask: generated the development key pair {}",
        secret_path.display()
    );
    Ok(public_path.to_path_buf())
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<(), String> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    file.write_all(bytes)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// `cargo xtask keys`: ensures the pair and prints where it is.
pub fn run() -> Result<(), String> {
    let public = ensure()?;
    println!("secret key:    {}", secret_key_path().display());
    println!("verifying key: {}", public.display());
    println!("audit key:     {}", audit_key_path().display());
    println!("audit public:  {}", audit_public_path().display());
    Ok(())
}

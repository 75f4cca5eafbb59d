//! The PTO key in the signer: loaded from a file only its owner can read, held in a page of
//! its own that is locked in RAM (`mlock`: never swapped) and left out of core dumps
//! (`MADV_DONTDUMP`), zeroized when dropped (`SigningKey`'s own drop zeroizes its scalar, then
//! the whole page is wiped). [`set_undumpable`] makes the process non-dumpable, so no core
//! file is written and no other process of the same user can ptrace it or read its memory.
//!
//! What is left: the key's bytes pass through the stack and the heap while the PEM file is
//! decoded. The file's bytes are zeroized (`Zeroizing`), the decoder zeroizes its own buffers,
//! and [`scrub_stack`] overwrites the stack area the decoding used.

use std::{
    fs::File,
    io::Read,
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
    ptr::NonNull,
};

use p384::{
    ecdsa::{signature::Signer as _, Signature, SigningKey, VerifyingKey},
    pkcs8::DecodePrivateKey,
};
use thiserror::Error;
use zeroize::{Zeroize, Zeroizing};

/// A PEM key file is a few hundred bytes; anything much larger is not one.
const MAX_KEY_FILE: u64 = 16 * 1024;

/// Why the key could not be loaded or protected.
#[derive(Debug, Error)]
pub enum KeyError {
    /// The file could not be opened or read.
    #[error("cannot read the signing key {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Not a regular file (a symlink is refused too).
    #[error("the signing key {path} is not a regular file")]
    NotAFile {
        /// The file.
        path: PathBuf,
    },
    /// Group or others may access the file.
    #[error(
        "the signing key {path} has mode {mode:04o}: only its owner may read it (chmod 600 {path})"
    )]
    Mode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Owned by another user than the one the signer runs as.
    #[error(
        "the signing key {path} is owned by uid {owner}, not by the signer's user (uid {expected}); chown it"
    )]
    Owner {
        /// The file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The signer's user.
        expected: u32,
    },
    /// Not a P-384 key in PKCS#8 PEM.
    #[error("{path} is not a P-384 secret key in PKCS#8 PEM (create one with `cargo xtask keys`)")]
    Format {
        /// The file.
        path: PathBuf,
    },
    /// The key's page could not be mapped, locked or excluded from dumps.
    #[error(
        "cannot {what} the key's memory: {source} (mlock needs RLIMIT_MEMLOCK of a page: `ulimit -l`, or CAP_IPC_LOCK)"
    )]
    Memory {
        /// mmap, mlock or madvise.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// prctl(PR_SET_DUMPABLE) failed.
    #[error("cannot make the signer non-dumpable: {0}")]
    Undumpable(std::io::Error),
}

/// Makes the process non-dumpable: no core dumps, and /proc/PID/mem and ptrace are closed to
/// other processes of the same user.
pub fn set_undumpable() -> Result<(), KeyError> {
    // SAFETY: PR_SET_DUMPABLE takes integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(KeyError::Undumpable(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Overwrites 64 KiB of the stack below the caller (where decoding left copies of the key).
#[inline(never)]
pub fn scrub_stack() {
    let mut buf = [0u8; 64 * 1024];
    buf.zeroize();
    std::hint::black_box(&buf);
}

/// Checks that `file` is a regular file that only its owner, `expected_owner`, may access.
fn check_file(path: &Path, file: &File, expected_owner: u32) -> Result<u64, KeyError> {
    let meta = file.metadata().map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(KeyError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Mode {
            path: path.to_path_buf(),
            mode,
        });
    }
    if meta.uid() != expected_owner {
        return Err(KeyError::Owner {
            path: path.to_path_buf(),
            owner: meta.uid(),
            expected: expected_owner,
        });
    }
    Ok(meta.len())
}

/// The signing key in its locked page.
pub struct LockedKey {
    key: NonNull<SigningKey>,
    len: usize,
}

// SAFETY: the page is owned by this value alone (mapped in `new`, unmapped in `drop`), and
// `SigningKey` is itself Send and Sync; access goes through `&self` only.
unsafe impl Send for LockedKey {}
// SAFETY: as above: shared access is to an immutable `SigningKey`.
unsafe impl Sync for LockedKey {}

impl std::fmt::Debug for LockedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockedKey").finish_non_exhaustive()
    }
}

impl LockedKey {
    /// Loads the PKCS#8 PEM key at `path`, which must be a regular file (not a symlink) of
    /// mode 0600 or 0400 owned by `expected_owner` (the user the signer runs as).
    pub fn load(path: &Path, expected_owner: u32) -> Result<Self, KeyError> {
        let read = |source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => KeyError::NotAFile {
                    path: path.to_path_buf(),
                },
                _ => read(e),
            })?;
        let len = check_file(path, &file, expected_owner)?;
        let format = || KeyError::Format {
            path: path.to_path_buf(),
        };
        if len > MAX_KEY_FILE {
            return Err(format());
        }
        // Room for the whole file up front: the buffer never reallocates (and so never leaves
        // an unzeroized copy behind).
        let mut pem = Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE as usize + 1));
        (&mut file)
            .take(MAX_KEY_FILE + 1)
            .read_to_end(&mut pem)
            .map_err(read)?;
        let text = std::str::from_utf8(&pem).map_err(|_| format())?;
        let key = SigningKey::from_pkcs8_pem(text).map_err(|_| format())?;
        Self::new(key)
    }

    /// Moves `key` into a fresh page, locked and excluded from core dumps.
    pub fn new(key: SigningKey) -> Result<Self, KeyError> {
        // SAFETY: sysconf takes an integer.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let len = std::mem::size_of::<SigningKey>().div_ceil(page) * page;
        let memory = |what| {
            let source = std::io::Error::last_os_error();
            move || KeyError::Memory { what, source }
        };
        // SAFETY: an anonymous private mapping at an address the kernel chooses; nothing else
        // refers to it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(memory("map")());
        }
        // SAFETY: `ptr..ptr+len` is the mapping just made.
        let locked = unsafe {
            if libc::mlock(ptr, len) != 0 {
                Err(memory("lock"))
            } else if libc::madvise(ptr, len, libc::MADV_DONTDUMP) != 0 {
                Err(memory("exclude from core dumps"))
            } else {
                Ok(())
            }
        };
        if let Err(e) = locked {
            // SAFETY: unmaps the mapping made above, which holds nothing yet.
            unsafe { libc::munmap(ptr, len) };
            return Err(e());
        }
        let key_ptr = ptr.cast::<SigningKey>();
        // SAFETY: the mapping is page-aligned (enough for any alignment), writable and at
        // least `size_of::<SigningKey>()` bytes long.
        unsafe { key_ptr.write(key) };
        Ok(Self {
            key: NonNull::new(key_ptr).ok_or_else(memory("map"))?,
            len,
        })
    }

    fn key(&self) -> &SigningKey {
        // SAFETY: written in `new`, dropped only in `drop`.
        unsafe { self.key.as_ref() }
    }

    /// Signs `statement`: ECDSA P-384 over SHA-384, `r || s`.
    pub fn sign(&self, statement: &[u8]) -> [u8; 96] {
        let signature: Signature = self.key().sign(statement);
        let mut out = [0u8; 96];
        out.copy_from_slice(&signature.to_bytes());
        out
    }

    /// The public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        *self.key().verifying_key()
    }
}

impl Drop for LockedKey {
    fn drop(&mut self) {
        let ptr = self.key.as_ptr();
        // SAFETY: the key was written in `new` and is dropped once, here (its drop zeroizes
        // the scalar); then the page, still mapped and writable, is wiped, unlocked and
        // unmapped.
        unsafe {
            std::ptr::drop_in_place(ptr);
            std::slice::from_raw_parts_mut(ptr.cast::<u8>(), self.len).zeroize();
            libc::munlock(ptr.cast(), self.len);
            libc::munmap(ptr.cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use p384::{
        ecdsa::signature::Verifier,
        pkcs8::{EncodePrivateKey, LineEnding},
    };

    use super::*;

    fn write_key(dir: &Path, mode: u32) -> (PathBuf, SigningKey) {
        let secret = p384::SecretKey::from_slice(&[0x42; 48]).unwrap();
        let key = SigningKey::from(&secret);
        let path = dir.join("pto.key");
        let pem = secret.to_pkcs8_pem(LineEnding::LF).unwrap();
        std::fs::write(&path, pem.as_bytes()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        (path, key)
    }

    fn me() -> u32 {
        // SAFETY: geteuid has no arguments.
        unsafe { libc::geteuid() }
    }

    #[test]
    fn an_owner_only_key_loads_and_signs() {
        let dir = tempfile::tempdir().unwrap();
        let (path, key) = write_key(dir.path(), 0o600);
        let locked = LockedKey::load(&path, me()).unwrap();
        assert_eq!(locked.verifying_key(), *key.verifying_key());
        let sig = Signature::from_slice(&locked.sign(b"statement")).unwrap();
        key.verifying_key().verify(b"statement", &sig).unwrap();
    }

    #[test]
    fn a_readable_key_another_owner_or_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = write_key(dir.path(), 0o644);
        let err = LockedKey::load(&path, me()).unwrap_err();
        assert!(matches!(err, KeyError::Mode { mode: 0o644, .. }), "{err}");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = LockedKey::load(&path, me() + 1).unwrap_err();
        assert!(matches!(err, KeyError::Owner { .. }), "{err}");
        let link = dir.path().join("link.key");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let err = LockedKey::load(&link, me()).unwrap_err();
        assert!(matches!(err, KeyError::NotAFile { .. }), "{err}");
    }
}

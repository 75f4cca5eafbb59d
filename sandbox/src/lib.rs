//! `see-sandbox`: confinement for the SEE-PTO processes (the VMM now, the daemon and the signer
//! later).
//!
//! Four independent pieces, applied by each process in this order:
//! 1. [`set_no_new_privs`]: no exec can ever gain privileges again (needed by Landlock and by
//!    seccomp for an unprivileged process);
//! 2. [`restrict_files`]: Landlock rules naming the only paths the process may open
//!    ([`FileRules`]); everything else is refused with `EACCES`;
//! 3. [`drop_privileges`]: when started as root, become the user and group of a [`UserSpec`]
//!    (setgroups, setgid, setuid, in that order, each checked), as Firecracker's jailer does;
//! 4. [`AllowList`] compiled into a [`ThreadFilter`]: a seccomp filter installed on the calling
//!    thread only (no TSYNC), so each kind of thread gets its own list; any other syscall kills
//!    the whole process with `SIGSYS`.
//!
//! Landlock and seccomp depend on the kernel. With [`Enforcement::BestEffort`] a missing
//! feature is logged as a warning and the process goes on; with [`Enforcement::Required`]
//! (a process's `--require-sandbox`) it is a [`SandboxError::Unsupported`] error.

#![warn(missing_docs)]

mod error;
mod files;
mod seccomp;
mod user;

#[cfg(test)]
mod child;

pub use error::SandboxError;
pub use files::{restrict_files, FileRules, FilesStatus};
pub use seccomp::{seccomp_available, AllowList, ThreadFilter};
pub use user::{check_drop, drop_privileges, Credentials, Dropped, UserSpec};

/// What to do when the kernel lacks a confinement feature.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Enforcement {
    /// Warn and carry on less confined.
    #[default]
    BestEffort,
    /// Refuse to run ([`SandboxError::Unsupported`]).
    Required,
}

impl Enforcement {
    /// `Required` when `require` is set.
    pub fn from_require(require: bool) -> Self {
        if require {
            Self::Required
        } else {
            Self::BestEffort
        }
    }

    /// Handles a missing feature: a warning, or an error when it is required.
    pub(crate) fn missing(self, feature: &'static str, detail: String) -> Result<(), SandboxError> {
        match self {
            Self::Required => Err(SandboxError::Unsupported { feature, detail }),
            Self::BestEffort => {
                log::warn!(
                    "{feature} is not available ({detail}): running WITHOUT it; pass --require-sandbox to refuse instead"
                );
                Ok(())
            }
        }
    }
}

/// Sets `no_new_privs` on the process: no later exec (setuid binary, file capabilities) can
/// gain privileges. It cannot be undone, and children inherit it.
pub fn set_no_new_privs() -> Result<(), SandboxError> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(SandboxError::NoNewPrivs(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Whether `no_new_privs` is set on the calling thread.
pub fn no_new_privs() -> bool {
    // SAFETY: PR_GET_NO_NEW_PRIVS takes no pointer and touches no memory.
    unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_feature_warns_or_refuses() {
        assert!(Enforcement::BestEffort
            .missing("Landlock", "test".into())
            .is_ok());
        let err = Enforcement::Required
            .missing("Landlock", "kernel too old".into())
            .unwrap_err();
        assert!(matches!(
            err,
            SandboxError::Unsupported {
                feature: "Landlock",
                ..
            }
        ));
        assert!(err.to_string().contains("--require-sandbox"), "{err}");
        assert_eq!(Enforcement::from_require(true), Enforcement::Required);
        assert_eq!(Enforcement::from_require(false), Enforcement::BestEffort);
    }

    #[test]
    fn no_new_privs_sticks() {
        // Harmless for the test process: it never execs a setuid binary.
        set_no_new_privs().unwrap();
        assert!(no_new_privs());
    }
}

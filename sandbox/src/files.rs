//! Landlock file rules: the process names the paths it may read and the paths it may also
//! write; once applied, opening anything else fails with `EACCES`, for the calling thread and
//! every thread and child it creates afterwards. Apply it while the process has one thread.
//!
//! The handled rights are those of Landlock ABI 5 (Linux 6.10): reading, writing, truncating,
//! creating, removing, renaming and linking files, and `ioctl` on device files. A kernel with
//! an older ABI enforces what it knows ("partially enforced"); one without Landlock enforces
//! nothing. Either is a warning, or an error under [`Enforcement::Required`].

use std::path::{Path, PathBuf};

use landlock::{
    Access, AccessFs, BitFlags, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, ABI,
};

use crate::{Enforcement, SandboxError};

/// The newest Landlock ABI whose file rights are handled.
const TARGET_ABI: ABI = ABI::V5;

/// The paths a process may open after [`restrict_files`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileRules {
    read_only: Vec<PathBuf>,
    read_write: Vec<PathBuf>,
}

impl FileRules {
    /// No path at all: every open by path is refused.
    pub fn new() -> Self {
        Self::default()
    }

    /// Allows reading `path` (a file, or a directory and everything beneath it).
    pub fn read_only(mut self, path: impl Into<PathBuf>) -> Self {
        self.read_only.push(path.into());
        self
    }

    /// Allows reading and writing `path` (a file or a device node: write, truncate, ioctl; a
    /// directory: also create, remove and rename beneath it). Never execute.
    pub fn read_write(mut self, path: impl Into<PathBuf>) -> Self {
        self.read_write.push(path.into());
        self
    }

    /// Every path with the rights it gets.
    fn rules(&self) -> impl Iterator<Item = (&Path, BitFlags<AccessFs>)> {
        let read = AccessFs::ReadFile | AccessFs::ReadDir;
        let write = AccessFs::from_all(TARGET_ABI) & !AccessFs::Execute;
        let ro = self.read_only.iter().map(move |p| (p.as_path(), read));
        ro.chain(self.read_write.iter().map(move |p| (p.as_path(), write)))
    }
}

/// How far [`restrict_files`] got on this kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilesStatus {
    /// Every handled right is enforced.
    Full,
    /// The kernel's Landlock ABI is older than the target: some rights are not enforced.
    Partial,
    /// Landlock is not available: nothing is enforced.
    None,
}

/// Applies `rules` to the calling thread (and the threads and children it creates later).
/// Paths that do not exist are left out (logged): opening them fails with `ENOENT` anyway.
/// Also sets `no_new_privs`, which Landlock needs.
pub fn restrict_files(rules: &FileRules, mode: Enforcement) -> Result<FilesStatus, SandboxError> {
    let mut created = Ruleset::default()
        .handle_access(AccessFs::from_all(TARGET_ABI))?
        .create()?;
    for (path, access) in rules.rules() {
        let fd = match PathFd::new(path) {
            Ok(fd) => fd,
            Err(e) if !path.exists() => {
                log::debug!(
                    "Landlock: {} does not exist, no rule for it ({e})",
                    path.display()
                );
                continue;
            }
            Err(source) => {
                return Err(SandboxError::RulePath {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        // Directory rights on a file would make the kernel refuse the rule.
        let access = if path.is_dir() {
            access
        } else {
            access & AccessFs::from_file(TARGET_ABI)
        };
        log::debug!("Landlock: {} may {access:?}", path.display());
        created = created.add_rule(PathBeneath::new(fd, access))?;
    }
    let status = created.restrict_self()?;
    match status.ruleset {
        RulesetStatus::FullyEnforced => Ok(FilesStatus::Full),
        RulesetStatus::PartiallyEnforced => {
            mode.missing(
                "Landlock ABI 5",
                format!(
                    "the kernel has {:?}: only part of the file rules hold",
                    status.landlock
                ),
            )?;
            Ok(FilesStatus::Partial)
        }
        RulesetStatus::NotEnforced => {
            mode.missing("Landlock", format!("{:?}", status.landlock))?;
            Ok(FilesStatus::None)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, io::ErrorKind};

    use super::*;
    use crate::child;

    /// The kernel's Landlock ABI version (0 without Landlock).
    fn kernel_abi() -> i64 {
        // SAFETY: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION) only
        // returns the ABI version.
        let v = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                std::ptr::null::<u8>(),
                0usize,
                1u32,
            )
        };
        v.max(0)
    }

    #[test]
    fn paths_outside_the_rules_are_refused() {
        if child::run("files::tests::paths_outside_the_rules_are_refused") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (ro, rw, other) = (
            dir.path().join("kernel"),
            dir.path().join("serial"),
            dir.path().join("secret"),
        );
        for p in [&ro, &rw, &other] {
            fs::write(p, b"before").unwrap();
        }
        let rules = FileRules::new()
            .read_only(&ro)
            .read_write(&rw)
            .read_only(dir.path().join("missing"));
        let status = restrict_files(&rules, Enforcement::BestEffort).unwrap();
        if status == FilesStatus::None {
            eprintln!("skipped: this kernel has no Landlock");
            assert!(fs::read(&other).is_ok());
            return;
        }
        if kernel_abi() >= 5 {
            assert_eq!(status, FilesStatus::Full);
        }

        assert_eq!(fs::read(&ro).unwrap(), b"before");
        let denied = fs::write(&ro, b"x").unwrap_err();
        assert_eq!(denied.kind(), ErrorKind::PermissionDenied, "{denied}");
        fs::write(&rw, b"after").unwrap();
        assert_eq!(fs::read(&rw).unwrap(), b"after");
        for refused in [
            fs::read(&other).map(drop),
            fs::read("/etc/passwd").map(drop),
            fs::write(dir.path().join("new"), b"x"),
            fs::read_dir(dir.path()).map(drop),
        ] {
            assert_eq!(refused.unwrap_err().kind(), ErrorKind::PermissionDenied);
        }
        // Outside the rules, a missing path still reads as missing.
        assert_eq!(
            fs::read(dir.path().join("missing")).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert!(crate::no_new_privs());
    }
}

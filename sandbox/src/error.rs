//! The one error type of the crate: every way confinement can fail, with what to do about it.

use std::{io, path::PathBuf};

/// Why a process could not be confined.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// `prctl(PR_SET_NO_NEW_PRIVS)` failed.
    #[error("cannot set no_new_privs: {0}")]
    NoNewPrivs(#[source] io::Error),
    /// A kernel feature is missing and `--require-sandbox` asked for it.
    #[error("{feature} is not available on this kernel ({detail}) and --require-sandbox is set: run on a kernel with it, or leave out --require-sandbox to run less confined")]
    Unsupported {
        /// Landlock or seccomp.
        feature: &'static str,
        /// What the kernel said.
        detail: String,
    },
    /// A `--user` value that does not parse.
    #[error("--user '{0}' is not a user: use NAME, NAME:GROUP or UID:GID")]
    UserSyntax(String),
    /// No such user in the user database.
    #[error("--user: there is no user named '{0}' (check /etc/passwd)")]
    UnknownUser(String),
    /// No such group in the group database.
    #[error("--user: there is no group named '{0}' (check /etc/group)")]
    UnknownGroup(String),
    /// A numeric user without a group and without a passwd entry to take one from.
    #[error("--user: uid {0} has no passwd entry to take a group from: give it as UID:GID")]
    NoGroupFor(u32),
    /// The user or group database could not be read.
    #[error("--user: cannot look up '{name}': {source}")]
    Lookup {
        /// The name looked up.
        name: String,
        /// The error.
        source: nix::Error,
    },
    /// A privilege drop asked of a process that is not root.
    #[error("--user needs the process to start as root, but it runs as uid {uid} gid {gid}: start it as root, or as the target user without --user")]
    NotRoot {
        /// The current real user.
        uid: u32,
        /// The current real group.
        gid: u32,
    },
    /// One step of the privilege drop failed.
    #[error("dropping privileges to uid {uid} gid {gid}: {step} failed: {source}")]
    Drop {
        /// setgroups, setgid or setuid.
        step: &'static str,
        /// The target user.
        uid: u32,
        /// The target group.
        gid: u32,
        /// The error.
        source: nix::Error,
    },
    /// The drop reported success but the process kept a privilege.
    #[error("dropping privileges to uid {uid} gid {gid} did not take: {what}")]
    DropIncomplete {
        /// The target user.
        uid: u32,
        /// The target group.
        gid: u32,
        /// What was still there.
        what: String,
    },
    /// A path named in a Landlock rule could not be opened.
    #[error("Landlock rule for {path}: {source}")]
    RulePath {
        /// The path.
        path: PathBuf,
        /// The error.
        source: landlock::PathFdError,
    },
    /// The Landlock ruleset could not be built or enforced.
    #[error("Landlock: {0}")]
    Landlock(#[from] landlock::RulesetError),
    /// A seccomp allow list could not be compiled.
    #[error("seccomp filter '{name}': {source}")]
    Compile {
        /// The filter's name.
        name: &'static str,
        /// The error.
        source: seccompiler::BackendError,
    },
    /// A seccomp filter could not be installed.
    #[error("cannot install seccomp filter '{name}': {source}")]
    Install {
        /// The filter's name.
        name: &'static str,
        /// The error.
        source: seccompiler::Error,
    },
}

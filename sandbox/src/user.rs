//! The privilege drop: from root to the user and group named by `--user`, as Firecracker's
//! jailer does it: supplementary groups cleared, then the group, then the user (the user last,
//! since setgid needs root), each step checked, and the result verified (root cannot be had
//! back).

use std::{fmt, str::FromStr};

use nix::unistd::{self, Gid, Group, Uid, User};

use crate::SandboxError;

/// A user or group given by name or by number.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Id {
    Name(String),
    Num(u32),
}

impl Id {
    fn parse(s: &str) -> Option<Self> {
        if s.is_empty() {
            return None;
        }
        Some(match s.parse::<u32>() {
            Ok(n) => Self::Num(n),
            Err(_) => Self::Name(s.to_owned()),
        })
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(n) => f.write_str(n),
            Self::Num(n) => write!(f, "{n}"),
        }
    }
}

/// A `--user` value: `NAME`, `NAME:GROUP` or `UID:GID` (names and numbers may be mixed). With
/// no group, the user's primary group from the passwd entry is used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserSpec {
    user: Id,
    group: Option<Id>,
}

impl FromStr for UserSpec {
    type Err = SandboxError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || SandboxError::UserSyntax(s.to_owned());
        let (user, group) = match s.split_once(':') {
            Some((u, g)) => (
                Id::parse(u).ok_or_else(bad)?,
                Some(Id::parse(g).ok_or_else(bad)?),
            ),
            None => (Id::parse(s).ok_or_else(bad)?, None),
        };
        if [Some(&user), group.as_ref()].into_iter().flatten().any(
            |id| matches!(id, Id::Name(n) if n.contains(|c: char| c.is_whitespace() || c == '\0')),
        ) {
            return Err(bad());
        }
        Ok(Self { user, group })
    }
}

impl fmt::Display for UserSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.group {
            Some(g) => write!(f, "{}:{g}", self.user),
            None => write!(f, "{}", self.user),
        }
    }
}

/// A numeric user and group to run as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The user id.
    pub uid: u32,
    /// The group id (also the only group: supplementary groups are cleared).
    pub gid: u32,
}

impl UserSpec {
    /// Looks the names up in the user and group databases. Call it before Landlock hides
    /// /etc/passwd and /etc/group.
    pub fn resolve(&self) -> Result<Credentials, SandboxError> {
        let lookup = |name: &str| {
            let name = name.to_owned();
            move |source| SandboxError::Lookup { name, source }
        };
        let (uid, primary) = match &self.user {
            Id::Num(n) => (
                *n,
                User::from_uid(Uid::from_raw(*n))
                    .map_err(lookup(&n.to_string()))?
                    .map(|u| u.gid.as_raw()),
            ),
            Id::Name(name) => {
                let user = User::from_name(name)
                    .map_err(lookup(name))?
                    .ok_or_else(|| SandboxError::UnknownUser(name.clone()))?;
                (user.uid.as_raw(), Some(user.gid.as_raw()))
            }
        };
        let gid = match &self.group {
            Some(Id::Num(n)) => *n,
            Some(Id::Name(name)) => Group::from_name(name)
                .map_err(lookup(name))?
                .ok_or_else(|| SandboxError::UnknownGroup(name.clone()))?
                .gid
                .as_raw(),
            None => primary.ok_or(SandboxError::NoGroupFor(uid))?,
        };
        Ok(Credentials { uid, gid })
    }
}

/// What [`drop_privileges`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// The process was root and now runs as the target.
    Dropped,
    /// The process already ran as the target user and group (not root): nothing to do.
    AlreadyThere,
}

/// Becomes `to`: setgroups (to none), setgid, setuid, each checked, then verifies that the
/// real, effective and saved ids all changed and that root cannot be had back.
///
/// Call it while the process has a single thread (glibc changes every thread's credentials,
/// but a thread that already installed a seccomp filter without `setresuid` would be killed).
/// A process that is not root gets [`SandboxError::NotRoot`], unless it already runs as
/// exactly `to` ([`Dropped::AlreadyThere`]).
pub fn drop_privileges(to: Credentials) -> Result<Dropped, SandboxError> {
    if check_drop(to)? == Dropped::AlreadyThere {
        log::info!(
            "already running as uid {} gid {}: no privileges to drop",
            to.uid,
            to.gid
        );
        return Ok(Dropped::AlreadyThere);
    }
    let step = |step| {
        move |source| SandboxError::Drop {
            step,
            uid: to.uid,
            gid: to.gid,
            source,
        }
    };
    let (new_uid, new_gid) = (Uid::from_raw(to.uid), Gid::from_raw(to.gid));
    unistd::setgroups(&[]).map_err(step("setgroups"))?;
    unistd::setresgid(new_gid, new_gid, new_gid).map_err(step("setgid"))?;
    unistd::setresuid(new_uid, new_uid, new_uid).map_err(step("setuid"))?;
    verify(to)?;
    log::info!("dropped privileges to uid {} gid {}", to.uid, to.gid);
    Ok(Dropped::Dropped)
}

/// What [`drop_privileges`] would do, without doing it: `Dropped` when the process is root,
/// `AlreadyThere` when it already runs as exactly `to`, else [`SandboxError::NotRoot`]. Lets
/// a process refuse a `--user` it cannot honour before it does any work.
pub fn check_drop(to: Credentials) -> Result<Dropped, SandboxError> {
    let (uid, gid) = (unistd::getuid().as_raw(), unistd::getgid().as_raw());
    if uid == 0 && unistd::geteuid().is_root() {
        return Ok(Dropped::Dropped);
    }
    if uid == to.uid && gid == to.gid {
        return Ok(Dropped::AlreadyThere);
    }
    Err(SandboxError::NotRoot { uid, gid })
}

/// Checks that the process is `to` in every id and that it cannot become root again.
fn verify(to: Credentials) -> Result<(), SandboxError> {
    let incomplete = |what: String| SandboxError::DropIncomplete {
        uid: to.uid,
        gid: to.gid,
        what,
    };
    let u = unistd::getresuid().map_err(|e| incomplete(format!("getresuid: {e}")))?;
    let g = unistd::getresgid().map_err(|e| incomplete(format!("getresgid: {e}")))?;
    let uids = [u.real, u.effective, u.saved].map(Uid::as_raw);
    let gids = [g.real, g.effective, g.saved].map(Gid::as_raw);
    if uids != [to.uid; 3] || gids != [to.gid; 3] {
        return Err(incomplete(format!("uids are {uids:?}, gids {gids:?}")));
    }
    let groups = unistd::getgroups().map_err(|e| incomplete(format!("getgroups: {e}")))?;
    if groups.iter().any(|g| g.as_raw() != to.gid) {
        return Err(incomplete(format!(
            "supplementary groups {groups:?} remain"
        )));
    }
    if to.uid != 0 && unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err(incomplete("setuid(0) still succeeds".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::child;

    #[test]
    fn user_specs_parse() {
        let spec: UserSpec = "nobody".parse().unwrap();
        assert_eq!(spec.to_string(), "nobody");
        assert_eq!(
            "1000:1001".parse::<UserSpec>().unwrap(),
            UserSpec {
                user: Id::Num(1000),
                group: Some(Id::Num(1001))
            }
        );
        assert_eq!(
            "see:kvm".parse::<UserSpec>().unwrap().to_string(),
            "see:kvm"
        );
        for bad in ["", ":", "a:", ":b", "a b", "a:b c"] {
            let err = bad.parse::<UserSpec>().unwrap_err();
            assert!(matches!(err, SandboxError::UserSyntax(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn names_resolve_through_the_user_database() {
        // root:root exists on every Linux system.
        assert_eq!(
            "root".parse::<UserSpec>().unwrap().resolve().unwrap(),
            Credentials { uid: 0, gid: 0 }
        );
        assert_eq!(
            "0:5".parse::<UserSpec>().unwrap().resolve().unwrap(),
            Credentials { uid: 0, gid: 5 }
        );
        let err = "no-such-user-see".parse::<UserSpec>().unwrap().resolve();
        assert!(matches!(err, Err(SandboxError::UnknownUser(_))), "{err:?}");
        let err = "root:no-such-group-see"
            .parse::<UserSpec>()
            .unwrap()
            .resolve();
        assert!(matches!(err, Err(SandboxError::UnknownGroup(_))), "{err:?}");
        let err = "4000000000".parse::<UserSpec>().unwrap().resolve();
        assert!(matches!(err, Err(SandboxError::NoGroupFor(_))), "{err:?}");
    }

    /// uid and gid 65534 (nobody/nogroup on Debian), by number so no passwd entry is needed.
    const NOBODY: Credentials = Credentials {
        uid: 65534,
        gid: 65534,
    };

    #[test]
    fn root_drops_to_the_user_for_good() {
        if child::run("user::tests::root_drops_to_the_user_for_good") {
            return;
        }
        if !unistd::getuid().is_root() {
            // Not root: the drop is refused, which is the other test's subject.
            assert!(matches!(
                drop_privileges(NOBODY),
                Err(SandboxError::NotRoot { .. })
            ));
            return;
        }
        assert_eq!(drop_privileges(NOBODY).unwrap(), Dropped::Dropped);
        assert_eq!(unistd::geteuid().as_raw(), 65534);
        assert!(unistd::getgroups()
            .unwrap()
            .iter()
            .all(|g| g.as_raw() == 65534));
        assert!(unistd::setuid(Uid::from_raw(0)).is_err());
        assert!(
            std::fs::File::open("/etc/shadow").is_err(),
            "root-only files are shut"
        );
    }

    #[test]
    fn a_drop_without_root_is_refused_clearly() {
        if child::run("user::tests::a_drop_without_root_is_refused_clearly") {
            return;
        }
        if unistd::getuid().is_root() {
            drop_privileges(NOBODY).unwrap();
        }
        // Now unprivileged: another user is refused, the current one is a no-op.
        let err = drop_privileges(Credentials {
            uid: 65533,
            gid: 65533,
        })
        .unwrap_err();
        assert!(matches!(err, SandboxError::NotRoot { .. }), "{err}");
        assert!(err.to_string().contains("start it as root"), "{err}");
        let me = Credentials {
            uid: unistd::getuid().as_raw(),
            gid: unistd::getgid().as_raw(),
        };
        assert_eq!(drop_privileges(me).unwrap(), Dropped::AlreadyThere);
    }
}

//! seccomp filters from allow lists: each kind of thread names the syscalls it makes (with,
//! where it matters, the argument values it uses), the list is compiled to BPF with
//! seccompiler, and the calling thread installs it for itself only (no TSYNC). Any syscall
//! not on the list kills the whole process with `SIGSYS` (`SECCOMP_RET_KILL_PROCESS`): a
//! thread that strays is treated as compromised.
//!
//! A filter is inherited by the threads its thread creates later and stacks with theirs, so a
//! process installs the filter of the thread that spawns others last.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::{Enforcement, SandboxError};

/// A condition on one syscall argument.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ArgRule {
    /// `arg == one of values`.
    OneOf(u8, Vec<u64>),
    /// `arg & mask == 0`.
    MaskClear(u8, u64),
    /// `arg & mask == mask`.
    MaskSet(u8, u64),
}

/// The syscalls one kind of thread may make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowList {
    name: &'static str,
    rules: BTreeMap<i64, Vec<ArgRule>>,
}

impl AllowList {
    /// An empty list; `name` says which thread it is for in logs and errors.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            rules: BTreeMap::new(),
        }
    }

    /// The list's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Allows each syscall in `syscalls` with any arguments.
    pub fn allow(mut self, syscalls: &[libc::c_long]) -> Self {
        for nr in syscalls {
            self.rules.insert(*nr, Vec::new());
        }
        self
    }

    /// Allows `syscall` only when argument `arg` (0-based) is one of `values`. Adding the
    /// same syscall and argument again widens the set.
    pub fn allow_arg(mut self, syscall: libc::c_long, arg: u8, values: &[u64]) -> Self {
        let rules = self.rules.entry(syscall).or_default();
        match rules.iter_mut().find_map(|r| match r {
            ArgRule::OneOf(a, v) if *a == arg => Some(v),
            _ => None,
        }) {
            Some(existing) => existing.extend_from_slice(values),
            None => rules.push(ArgRule::OneOf(arg, values.to_vec())),
        }
        self
    }

    /// Allows `syscall` only when argument `arg` has none of the bits of `mask` set (e.g.
    /// `mmap` without `PROT_EXEC`).
    pub fn allow_arg_without(mut self, syscall: libc::c_long, arg: u8, mask: u64) -> Self {
        self.rules
            .entry(syscall)
            .or_default()
            .push(ArgRule::MaskClear(arg, mask));
        self
    }

    /// Allows `syscall` only when argument `arg` has every bit of `mask` set (e.g. `clone`
    /// with `CLONE_THREAD`: a thread, never a new process).
    pub fn allow_arg_with(mut self, syscall: libc::c_long, arg: u8, mask: u64) -> Self {
        self.rules
            .entry(syscall)
            .or_default()
            .push(ArgRule::MaskSet(arg, mask));
        self
    }

    /// Whether `syscall` is on the list (with or without argument conditions).
    pub fn contains(&self, syscall: libc::c_long) -> bool {
        self.rules.contains_key(&syscall)
    }

    /// Compiles the list: allowed syscalls pass, anything else kills the process.
    pub fn compile(&self) -> Result<ThreadFilter, SandboxError> {
        let err = |source| SandboxError::Compile {
            name: self.name,
            source,
        };
        let mut rules = BTreeMap::new();
        for (nr, args) in &self.rules {
            rules.insert(*nr, seccomp_rules(args).map_err(err)?);
        }
        let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(err)?;
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::KillProcess,
            SeccompAction::Allow,
            arch,
        )
        .map_err(err)?;
        let program = BpfProgram::try_from(filter).map_err(err)?;
        Ok(ThreadFilter {
            name: self.name,
            program,
        })
    }
}

/// The rules of one syscall: all its argument conditions must hold (an empty list: always).
/// A `OneOf` condition becomes one rule per value, each with the other conditions.
fn seccomp_rules(args: &[ArgRule]) -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    let cond = |arg, op, value| SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value);
    let mut fixed = Vec::new();
    let mut choices: Vec<Vec<SeccompCondition>> = vec![Vec::new()];
    for rule in args {
        match rule {
            ArgRule::MaskClear(arg, mask) => {
                fixed.push(cond(*arg, SeccompCmpOp::MaskedEq(*mask), 0)?)
            }
            ArgRule::MaskSet(arg, mask) => {
                fixed.push(cond(*arg, SeccompCmpOp::MaskedEq(*mask), *mask)?)
            }
            ArgRule::OneOf(arg, values) => {
                let mut next = Vec::new();
                for prefix in &choices {
                    for v in values {
                        let mut c = prefix.clone();
                        c.push(cond(*arg, SeccompCmpOp::Eq, *v)?);
                        next.push(c);
                    }
                }
                choices = next;
            }
        }
    }
    if args.is_empty() {
        return Ok(Vec::new());
    }
    choices
        .into_iter()
        .map(|mut c| {
            c.extend(fixed.iter().cloned());
            SeccompRule::new(c)
        })
        .collect()
}

/// A compiled allow list, ready to install on a thread.
#[derive(Clone, Debug)]
pub struct ThreadFilter {
    name: &'static str,
    program: BpfProgram,
}

impl ThreadFilter {
    /// The list's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Installs the filter on the calling thread only (and the threads it creates later).
    /// Needs `no_new_privs` (or `CAP_SYS_ADMIN`). It cannot be removed.
    pub fn install(&self) -> Result<(), SandboxError> {
        seccompiler::apply_filter(&self.program).map_err(|source| SandboxError::Install {
            name: self.name,
            source,
        })?;
        log::debug!("seccomp filter '{}' installed", self.name);
        Ok(())
    }
}

/// Whether the kernel has seccomp filters. When it does not, warns (best effort) or returns
/// [`SandboxError::Unsupported`] (required).
pub fn seccomp_available(mode: Enforcement) -> Result<bool, SandboxError> {
    // SAFETY: PR_GET_SECCOMP takes no pointer and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
    if rc >= 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    mode.missing("seccomp", format!("prctl(PR_GET_SECCOMP): {e}"))?;
    Ok(false)
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;
    use crate::child;

    #[test]
    fn argument_rules_expand_to_one_rule_per_value() {
        let list = AllowList::new("t")
            .allow(&[libc::SYS_read])
            .allow_arg(libc::SYS_ioctl, 1, &[1, 2])
            .allow_arg(libc::SYS_ioctl, 1, &[3])
            .allow_arg_without(libc::SYS_mmap, 2, libc::PROT_EXEC as u64)
            .allow_arg_with(libc::SYS_clone, 0, libc::CLONE_THREAD as u64);
        assert_eq!(
            seccomp_rules(&list.rules[&libc::SYS_clone]).unwrap().len(),
            1
        );
        assert!(list.contains(libc::SYS_ioctl) && !list.contains(libc::SYS_write));
        assert_eq!(
            seccomp_rules(&list.rules[&libc::SYS_read]).unwrap().len(),
            0
        );
        assert_eq!(
            seccomp_rules(&list.rules[&libc::SYS_ioctl]).unwrap().len(),
            3
        );
        assert_eq!(
            seccomp_rules(&list.rules[&libc::SYS_mmap]).unwrap().len(),
            1
        );
        assert!(list.compile().is_ok());
        assert!(seccomp_available(Enforcement::Required).unwrap());
    }

    /// In the child: a filter allowing `write` and `prctl(PR_GET_DUMPABLE)` only; the child
    /// writes a marker, makes the allowed prctl, then one with another option.
    #[test]
    fn a_syscall_off_the_list_kills_the_process_with_sigsys() {
        const NAME: &str = "seccomp::tests::a_syscall_off_the_list_kills_the_process_with_sigsys";
        if !child::in_child() {
            let out = child::output(NAME);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.signal(),
                Some(libc::SIGSYS),
                "{}: {stderr}",
                out.status
            );
            assert!(stderr.contains("allowed calls passed"), "{stderr}");
            return;
        }
        crate::set_no_new_privs().unwrap();
        let filter = AllowList::new("test")
            .allow(&[libc::SYS_write])
            .allow_arg(libc::SYS_prctl, 0, &[libc::PR_GET_DUMPABLE as u64])
            .compile()
            .unwrap();
        let marker = b"allowed calls passed\n";
        filter.install().unwrap();
        // SAFETY: prctl with integer arguments and a write of a live buffer to stderr.
        unsafe {
            libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0);
            libc::write(2, marker.as_ptr().cast(), marker.len());
            libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0);
        }
        unreachable!("the forbidden prctl returned");
    }

    /// In the child: a second thread installs a filter that forbids almost everything; the
    /// test thread goes on unfiltered.
    #[test]
    fn a_filter_binds_only_its_own_thread() {
        if child::run("seccomp::tests::a_filter_binds_only_its_own_thread") {
            return;
        }
        crate::set_no_new_privs().unwrap();
        let filter = AllowList::new("parked")
            .allow(&[libc::SYS_futex])
            .compile()
            .unwrap();
        let (installed_tx, installed) = std::sync::mpsc::channel();
        let (keep_open, never) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            filter.install().unwrap();
            installed_tx.send(()).unwrap();
            // Parks forever (futex only); the process exit ends it.
            let _ = never.recv();
        });
        installed.recv().unwrap();
        // SAFETY: getppid has no arguments.
        assert!(unsafe { libc::getppid() } > 0);
        assert!(std::fs::read("/proc/self/status").is_ok());
        std::mem::forget(keep_open);
    }
}

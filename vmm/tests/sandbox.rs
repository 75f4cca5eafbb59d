//! The VMM's confinement, seen from outside: the binary runs a tiny guest with the sandbox on
//! (the default), a syscall off a thread's seccomp list kills it with SIGSYS (through the
//! `test-hooks` feature, which the dev-dependency on itself turns on for these tests only),
//! `--no-sandbox` turns that off, and `--user` drops root or is refused without it.

use std::{
    os::unix::process::{CommandExt, ExitStatusExt},
    path::Path,
    process::{Command, Output},
};

use see_vmm::confine::FORBIDDEN_SYSCALL_ENV;

/// Whether KVM tests run: skipped without /dev/kvm unless SEE_REQUIRE_KVM is set.
fn kvm_available() -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => true,
        Err(e) if std::env::var_os("SEE_REQUIRE_KVM").is_some() => {
            panic!("SEE_REQUIRE_KVM is set but /dev/kvm cannot be opened: {e}")
        }
        Err(e) => {
            eprintln!(
                "skipped: /dev/kvm cannot be opened ({e}); set SEE_REQUIRE_KVM=1 to fail instead"
            );
            false
        }
    }
}

/// A PVH ELF whose 32-bit code writes "ok" to COM1 and 0 to the exit port.
fn guest_elf() -> Vec<u8> {
    #[rustfmt::skip]
    let code = [
        0x66, 0xBA, 0xF8, 0x03, // mov dx, 0x3f8
        0xB0, b'o', 0xEE,       // mov al, 'o'; out dx, al
        0xB0, b'k', 0xEE,       // mov al, 'k'; out dx, al
        0xBA, 0x01, 0x05, 0x00, 0x00, // mov edx, 0x501
        0x31, 0xC0, 0xEF,       // xor eax, eax; out dx, eax
        0xF4, 0xEB, 0xFD,       // hlt; jmp hlt
    ];
    let mut f = vec![0u8; 0x200];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // 64-bit
    f[5] = 1; // little-endian
    f[6] = 1;
    f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[24..32].copy_from_slice(&0x10_0000u64.to_le_bytes()); // e_entry
    f[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    f[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    f[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    f[56..58].copy_from_slice(&2u16.to_le_bytes()); // e_phnum
    let phdr = |ty: u32, off: u64, addr: u64, size: u64| {
        let mut p = vec![0u8; 56];
        p[0..4].copy_from_slice(&ty.to_le_bytes());
        p[4..8].copy_from_slice(&5u32.to_le_bytes()); // R+X
        p[8..16].copy_from_slice(&off.to_le_bytes());
        p[16..24].copy_from_slice(&addr.to_le_bytes());
        p[24..32].copy_from_slice(&addr.to_le_bytes());
        p[32..40].copy_from_slice(&size.to_le_bytes());
        p[40..48].copy_from_slice(&size.to_le_bytes());
        p
    };
    f[64..120].copy_from_slice(&phdr(1, 0x200, 0x10_0000, code.len() as u64));
    f[120..176].copy_from_slice(&phdr(4, 0x100, 0, 20));
    let note: Vec<u8> = [4u32, 4, 18] // XEN_ELFNOTE_PHYS32_ENTRY
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .chain(*b"Xen\0")
        .chain(0x10_0000u32.to_le_bytes())
        .collect();
    f[0x100..0x100 + note.len()].copy_from_slice(&note);
    f.extend(code);
    f
}

/// A world-readable directory with the guest in it; the serial console goes to `serial`.
fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kernel"), guest_elf()).unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    dir
}

/// `see-vmm --kernel DIR/kernel --serial file:DIR/serial --memory 32 --shared-mem 1 ARGS`.
fn vmm(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_see-vmm"));
    c.arg("--kernel")
        .arg(dir.join("kernel"))
        .arg("--serial")
        .arg(format!("file:{}", dir.join("serial").display()))
        .args(["--memory", "32", "--shared-mem", "1"])
        .args(args)
        .env_remove(FORBIDDEN_SYSCALL_ENV);
    c
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_sandboxed_vmm_boots_writes_its_serial_file_and_exits() {
    if !kvm_available() {
        return;
    }
    let dir = setup();
    let out = vmm(dir.path(), &["--require-sandbox", "--boot-report"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(dir.path().join("serial")).unwrap(), b"ok");
    // The main thread read its own /proc entries through its Landlock rule.
    assert!(stderr(&out).contains("boot-report"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("rss_kib=0 "), "{}", stderr(&out));
}

fn assert_killed_by_sigsys(thread: &str) {
    let dir = setup();
    let out = vmm(dir.path(), &[])
        .env(FORBIDDEN_SYSCALL_ENV, thread)
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGSYS),
        "{thread}: {} {}",
        out.status,
        stderr(&out)
    );
    // The hook logged before its call: the death is the hook's, not a missing list entry.
    assert!(
        stderr(&out).contains(&format!("test hook: the {thread} thread calls socket()")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_forbidden_syscall_on_a_vcpu_thread_kills_the_vmm_with_sigsys() {
    if kvm_available() {
        assert_killed_by_sigsys("vcpu");
    }
}

#[test]
fn a_forbidden_syscall_on_the_main_thread_kills_the_vmm_with_sigsys() {
    if kvm_available() {
        assert_killed_by_sigsys("main");
    }
}

#[test]
fn no_sandbox_lets_the_same_syscall_through() {
    if !kvm_available() {
        return;
    }
    let dir = setup();
    for thread in ["vcpu", "main"] {
        let out = vmm(dir.path(), &["--no-sandbox"])
            .env(FORBIDDEN_SYSCALL_ENV, thread)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{thread}: {}", stderr(&out));
        assert!(stderr(&out).contains("test hook"), "{}", stderr(&out));
    }
    let out = vmm(dir.path(), &["--no-sandbox", "--require-sandbox"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "the flags conflict: {}",
        stderr(&out)
    );
}

/// uid and gid 65534 (nobody/nogroup on Debian), by number.
const NOBODY: (u32, u32) = (65534, 65534);

#[test]
fn root_drops_to_the_user_and_still_runs_the_guest() {
    if !kvm_available() {
        return;
    }
    // SAFETY: getuid has no arguments.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("skipped: the drop from root needs the tests to run as root");
        return;
    }
    let dir = setup();
    let out = vmm(dir.path(), &["--user", "65534:65534", "--require-sandbox"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(dir.path().join("serial")).unwrap(), b"ok");
}

#[test]
fn user_without_root_is_refused_before_anything_runs() {
    let dir = setup();
    let mut cmd = vmm(dir.path(), &["--user", "65533:65533"]);
    // SAFETY: getuid has no arguments.
    if unsafe { libc::getuid() } == 0 {
        cmd.uid(NOBODY.0).gid(NOBODY.1);
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--user needs the process to start as root"),
        "{}",
        stderr(&out)
    );
    let out = vmm(dir.path(), &["--user", "no-such-user-see"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no user named"), "{}", stderr(&out));
}

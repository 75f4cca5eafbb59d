//! The guest image boots on real KVM: banner, ready line, self-tests, exit status, and the
//! VMM options that shape the VM (vCPUs, shared window, command line, serial output).

use see_e2e::{kvm_available, Vmm};

#[test]
fn boots_to_ready_and_passes_selftests() {
    if !kvm_available() {
        return;
    }
    let out = Vmm::boot().run();
    out.assert_code(see_abi::exit::SUCCESS)
        .assert_stdout("SEE kernel")
        .assert_stdout("see: self-tests passed (10)")
        .assert_stdout("see: self-test halt: ok")
        .assert_stdout("see: self-test ring3: ok")
        .assert_stdout("see: self-test sha256: ok")
        .assert_stdout("see: done in");
    let ready: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("see: ready in "))
        .collect();
    assert_eq!(ready.len(), 1, "one ready line:\n{}", out.stdout);
    let us: u64 = ready[0]
        .trim_start_matches("see: ready in ")
        .trim_end_matches(" us")
        .parse()
        .expect("the ready line carries microseconds");
    assert!(us > 0, "time since entry is measured");
    let lines: Vec<&str> = out.stdout.lines().collect();
    let banner = lines
        .iter()
        .position(|l| l.starts_with("SEE kernel"))
        .unwrap();
    let ready = lines
        .iter()
        .position(|l| l.starts_with("see: ready in"))
        .unwrap();
    assert!(banner < ready, "banner comes before the ready line");
    assert!(!out.stdout.contains("FAILED"), "{}", out.stdout);
    // The VMM hands the guest KVM's supported CPUID, SHA included, so on a host with SHA-NI
    // the guest hashes with it (and its self-test checked the result in ring 3).
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("sha")
        && std::is_x86_feature_detected!("ssse3")
        && std::is_x86_feature_detected!("sse4.1")
    {
        out.assert_stdout(", sha256 SHA-NI")
            .assert_stdout("see: sha256: SHA-NI");
    }
}

#[test]
fn boots_with_several_cpus_and_stops_them_all() {
    if !kvm_available() {
        return;
    }
    for cpus in ["2", "4"] {
        let out = Vmm::boot()
            .args(["--cpus", cpus, "--cmdline", "see.selftest=0"])
            .run();
        out.assert_code(see_abi::exit::SUCCESS)
            .assert_stdout("see: ready in");
        // The application processors wait for a SIPI inside KVM_RUN until the VMM stops them.
        assert!(
            !out.stderr.contains("did not stop"),
            "--cpus {cpus}: {}",
            out.stderr
        );
    }
}

#[test]
fn shared_window_size_and_cmdline_reach_the_guest() {
    if !kvm_available() {
        return;
    }
    Vmm::boot()
        .args(["--shared-mem", "4", "--memory", "64"])
        .args([
            "--cmdline",
            "see.selftest=1 virtio_mmio.device=4K@0xd0000000:5 demo.key=x",
        ])
        .run()
        .assert_code(see_abi::exit::SUCCESS)
        .assert_stdout("see: shared window: 4096 KiB at 0xc0000000")
        .assert_stdout("see: virtio-mmio device: 4096 bytes at 0xd0000000, GSI 5")
        .assert_stdout("ignoring unknown command-line key \"demo.key\"")
        .assert_stdout("see: self-test shared-window: ok");
}

#[test]
fn serial_to_a_file() {
    if !kvm_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let console = dir.path().join("console.log");
    let out = Vmm::boot()
        .args(["--cmdline", "see.selftest=0"])
        .arg(format!("--serial=file:{}", console.display()))
        .run();
    out.assert_code(see_abi::exit::SUCCESS);
    assert!(
        !out.stdout.contains("see:"),
        "console went to stdout: {}",
        out.stdout
    );
    let text = std::fs::read_to_string(&console).expect("the console file exists");
    assert!(text.starts_with("SEE kernel"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("see: ready in")),
        "{text}"
    );
    assert!(text.ends_with('\n'), "the last line is complete: {text:?}");
}

#[test]
fn boot_report_has_progress_times_and_memory() {
    if !kvm_available() {
        return;
    }
    let out = Vmm::boot().args(["--boot-report", "--serial", "off"]).run();
    out.assert_code(see_abi::exit::SUCCESS);
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("boot-report"))
        .expect("a boot-report line");
    let field = |key: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{key} missing in {line}"))
    };
    let (entry, ready, selftests, exit) = (
        field("entry_us"),
        field("ready_us"),
        field("selftests_us"),
        field("exit_us"),
    );
    assert!(
        0 < entry && entry < ready && ready < selftests && selftests <= exit,
        "{line}"
    );
    assert!(field("guest_kib") > 0, "the guest touched memory: {line}");
    assert!(field("rss_kib") > field("guest_kib"), "{line}");
    assert_eq!(field("exit_code"), 0);
}

#[test]
fn boots_at_the_smallest_and_largest_memory_sizes() {
    if !kvm_available() {
        return;
    }
    // 32 and 3072 MiB are the limits --memory accepts (tests/bad_input.rs checks past them).
    for (mib, min_kib) in [("32", 31 * 1024), ("3072", 3071 * 1024)] {
        let out = Vmm::boot()
            .args(["--memory", mib, "--cmdline", "see.selftest=0"])
            .run();
        out.assert_code(see_abi::exit::SUCCESS)
            .assert_stdout("see: ready in");
        let kib: u64 = out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("see: memory: "))
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("--memory {mib}: no memory line:\n{}", out.stdout));
        let max_kib: u64 = mib.parse::<u64>().unwrap() * 1024;
        assert!(
            (min_kib..=max_kib).contains(&kib),
            "--memory {mib}: the guest found {kib} KiB of RAM"
        );
    }
}

/// Guest RAM is populated in the background once the guest is ready, unless `--prefault off`,
/// with or without huge pages; the guest boots and passes its self-tests either way. The VMM
/// stops and joins the thread before it measures memory, so what the thread reports having
/// populated is resident at the end; turned off, it starts no thread and the guest's RAM is
/// only what it touched.
#[test]
fn prefault_populates_guest_ram_and_can_be_turned_off() {
    if !kvm_available() {
        return;
    }
    let run = |prefault: &str, huge_pages: &str| {
        let out = Vmm::boot()
            .env("RUST_LOG", "warn,see_vmm::prefault=debug")
            .args(["--memory", "32", "--boot-report", "--serial", "off"])
            .args(["--prefault", prefault, "--huge-pages", huge_pages])
            .run();
        out.assert_code(see_abi::exit::SUCCESS);
        let guest_kib = boot_report_field(&out.stderr, "guest_kib");
        (out.stderr, guest_kib)
    };
    let (log, off_kib) = run("off", "off");
    assert!(!log.contains("prefault:"), "no prefault thread: {log}");
    assert!(off_kib < 32 << 10, "the guest touched all its RAM: {log}");
    for huge_pages in ["off", "on"] {
        let (log, kib) = run("on", huge_pages);
        if log.contains("no MADV_POPULATE_WRITE") {
            continue; // a host before Linux 5.14
        }
        // "prefault: 32 MiB in N ms", or "prefault: stopped after N MiB" if the guest ended
        // the VM first.
        let mib = log
            .lines()
            .find_map(|l| {
                let rest = l.split("prefault: ").nth(1)?;
                let mib = rest.strip_prefix("stopped after ").unwrap_or(rest);
                mib.split(" MiB").next()?.parse::<u64>().ok()
            })
            .unwrap_or_else(|| panic!("the prefault thread reports: {log}"));
        assert!(mib <= 32, "{log}");
        assert!(
            kib >= mib << 10,
            "{mib} MiB populated, {kib} KiB resident: {log}"
        );
    }
}

/// A `key=value` field of the `boot-report` line in `stderr`.
fn boot_report_field(stderr: &str, key: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.contains("boot-report"))
        .expect("a boot-report line");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{key} missing in {line}"))
}

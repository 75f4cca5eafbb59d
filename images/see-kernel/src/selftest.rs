//! Boot self-tests: each checks one kernel service against the real machine and reports.

use alloc::{boxed::Box, collections::BTreeMap, string::String, vec::Vec};
use core::sync::atomic::{AtomicU32, Ordering};

use x86_64::instructions::interrupts as cpu_irq;

use crate::{
    console::{self, COM1_GSI},
    heap, interrupts,
    memmap::{self, E820_RAM, E820_SEE_SHARED, MAPPED_LIMIT},
    time::{self, Deadline},
};

type TestResult = Result<(), String>;
type SelfTest = (&'static str, fn() -> TestResult);

macro_rules! check {
    ($cond:expr, $($msg:tt)*) => {
        if !$cond {
            return Err(alloc::format!($($msg)*));
        }
    };
}

/// Runs every self-test (plus a failing one if `inject_failure`), printing one line per test.
/// Returns the number that passed, or the number that failed.
pub fn run(inject_failure: bool) -> Result<usize, usize> {
    let mut tests: Vec<SelfTest> = alloc::vec![
        ("allocator", allocator as fn() -> TestResult),
        ("e820", e820),
        ("shared-window", shared_window),
        ("timer", timer),
        ("exceptions", exceptions),
        ("interrupts", uart_interrupt),
        ("halt", halt),
        ("entropy", entropy),
        ("ring3", ring3),
        ("sha256", sha256),
    ];
    if inject_failure {
        tests.push(("injected-failure", || {
            Err("see.test=selftest-fail asked for it".into())
        }));
    }
    let mut failed = 0;
    for (name, test) in &tests {
        let start = time::tsc();
        match test() {
            Ok(()) => println!(
                "see: self-test {name}: ok ({} us)",
                time::ticks_to_us(time::tsc() - start)
            ),
            Err(why) => {
                failed += 1;
                println!("see: self-test {name}: FAILED: {why}");
            }
        }
    }
    if failed == 0 {
        Ok(tests.len())
    } else {
        Err(failed)
    }
}

fn allocator() -> TestResult {
    let before = heap::used();
    {
        let v: Vec<u64> = (0..500).collect();
        check!(
            v.iter().sum::<u64>() == 124_750,
            "vector contents corrupted"
        );
        let big = alloc::vec![0xa5u8; 16 << 10];
        check!(
            big[0] == 0xa5 && big[(16 << 10) - 1] == 0xa5,
            "16 KiB buffer corrupted"
        );
        let mut m = BTreeMap::new();
        for i in 0..64u32 {
            m.insert(i, Box::new(i * 3));
        }
        check!(m.get(&37).map(|b| **b) == Some(111), "map lookup wrong");
        check!(heap::used() > before, "allocations not accounted");
    }
    check!(
        heap::used() == before,
        "leak: {} bytes still used after free",
        heap::used() - before
    );
    let mut huge: Vec<u8> = Vec::new();
    check!(
        huge.try_reserve(1 << 40).is_err(),
        "a 1 TiB reservation succeeded"
    );
    Ok(())
}

fn e820() -> TestResult {
    let map = memmap::get();
    let entries = map.entries();
    // Loaders need not sort the table (QEMU lists its reserved ranges first), but no two
    // entries may claim the same byte.
    for (i, a) in entries.iter().enumerate() {
        for b in &entries[i + 1..] {
            check!(
                a.end() <= b.start || b.end() <= a.start,
                "entries overlap: {a:x?} and {b:x?}"
            );
        }
    }
    check!(
        map.ram().any(|r| r.start == 0),
        "no RAM at address 0 (low memory)"
    );
    let (kstart, kend) = crate::boot::kernel_range();
    check!(
        map.ram().any(|r| r.contains(kstart, kend - kstart)),
        "kernel image {kstart:#x}..{kend:#x} is not inside E820 RAM"
    );
    // see-vmm always gives one; another PVH loader (QEMU) gives none.
    check!(
        entries.iter().filter(|r| r.kind == E820_SEE_SHARED).count() <= 1,
        "more than one shared-window entry (type {E820_SEE_SHARED:#x})"
    );
    check!(map.ram_bytes() >= 16 << 20, "less than 16 MiB of RAM");
    check!(
        entries.iter().all(|r| r.kind != E820_RAM || r.len > 0),
        "empty RAM entry"
    );
    Ok(())
}

fn shared_window() -> TestResult {
    let Some(w) = memmap::get().shared_window() else {
        // Nothing to test: a VM without the virtio-prefetch device (the serve app refuses to
        // start without a window).
        println!("see: shared window: none in the memory map, nothing to check");
        return Ok(());
    };
    check!(
        w.len >= 4096 && w.len % 4096 == 0,
        "window size {:#x} is not whole pages",
        w.len
    );
    check!(w.end() <= MAPPED_LIMIT, "window beyond the identity map");
    check!(
        memmap::get()
            .ram()
            .all(|r| r.end() <= w.start || r.start >= w.end()),
        "window overlaps private RAM"
    );
    // Host-shared memory is only ever touched with volatile accesses.
    for (i, addr) in [w.start, w.end() - 8].into_iter().enumerate() {
        let p = addr as *mut u64;
        let pattern = 0x5ee0_5ee0_0000_0000 | i as u64;
        // SAFETY: the address is inside the shared window, identity-mapped RAM owned by no
        // device yet; volatile, so the compiler neither elides nor merges the accesses.
        let back = unsafe {
            p.write_volatile(pattern);
            let back = p.read_volatile();
            p.write_volatile(0);
            back
        };
        check!(
            back == pattern,
            "read back {back:#x} at {addr:#x}, wrote {pattern:#x}"
        );
    }
    Ok(())
}

fn timer() -> TestResult {
    let hz = time::tsc_hz();
    check!(
        (100_000_000..=10_000_000_000).contains(&hz),
        "implausible TSC frequency {hz} Hz"
    );
    let mut last = time::monotonic_ns();
    for _ in 0..32 {
        let now = time::monotonic_ns();
        check!(now >= last, "the clock went backwards: {now} < {last}");
        last = now;
    }
    // TSC ticks converted with the derived frequency must agree with kvmclock over a 2 ms
    // spin. A vCPU preempted between paired reads makes one attempt disagree, so any of three
    // attempts within 5% passes.
    let mut seen = alloc::vec::Vec::new();
    for _ in 0..3 {
        let (ns0, tsc0) = (time::monotonic_ns(), time::tsc());
        let deadline = Deadline::after_us(2000);
        while !deadline.expired() {
            core::hint::spin_loop();
        }
        let (tsc1, ns1) = (time::tsc(), time::monotonic_ns());
        let by_tsc = time::ticks_to_us(tsc1 - tsc0) * 1000;
        let by_clock = ns1 - ns0;
        if by_tsc >= 1_900_000 && by_clock.abs_diff(by_tsc) <= by_tsc / 20 {
            return Ok(());
        }
        seen.push((by_tsc, by_clock));
    }
    Err(alloc::format!(
        "TSC and clock ({}) disagree over 2 ms spins (tsc ns, clock ns): {seen:?}",
        time::source().name()
    ))
}

/// A halt bounded by the TSC-deadline timer ends at its deadline, not before, and not long
/// after; a wake flag already set skips the halt.
fn halt() -> TestResult {
    use core::sync::atomic::AtomicBool;
    let never = AtomicBool::new(false);
    let ticks = time::tsc_hz() / 1000; // 1 ms
    let start = time::tsc();
    interrupts::halt_until(start + ticks, &never);
    let waited = time::tsc() - start;
    // Any interrupt ends a halt early (the UART's, say): allow one retry.
    if waited < ticks {
        let again = time::tsc();
        interrupts::halt_until(again + ticks, &never);
        check!(
            time::tsc() - again >= ticks,
            "a halt ended before its deadline twice"
        );
    }
    check!(
        waited < 200 * ticks,
        "a 1 ms halt took {} us",
        time::ticks_to_us(waited)
    );
    let woken = AtomicBool::new(true);
    let start = time::tsc();
    interrupts::halt_until(start + 1000 * ticks, &woken);
    check!(
        time::tsc() - start < 100 * ticks,
        "a set wake flag did not skip the halt"
    );
    Ok(())
}

/// Work runs in ring 3 and comes back with its result, a halt works from there, and the
/// speed-up over ring 0 is printed (about 1000x under PVM, about 1x on hardware KVM).
fn ring3() -> TestResult {
    fn spin(n: u64) -> u64 {
        let mut x = 0u64;
        for i in 0..n {
            x = core::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i));
        }
        x
    }
    const N: u64 = 2000;
    let start = time::tsc();
    let ring0 = spin(N);
    let ring0_ticks = time::tsc() - start;
    let start = time::tsc();
    let irq_before = cpu_irq::are_enabled();
    let (ring3, was_user) = crate::usermode::run(|| (spin(N), crate::usermode::in_user_mode()));
    let ring3_ticks = time::tsc() - start;
    check!(was_user, "the closure did not run in ring 3");
    check!(
        cpu_irq::are_enabled() == irq_before,
        "the ring-3 call changed the interrupt flag"
    );
    check!(
        !crate::usermode::in_user_mode(),
        "still in ring 3 after the call"
    );
    check!(
        ring3 == ring0,
        "ring 3 computed {ring3:#x}, ring 0 {ring0:#x}"
    );
    let woke = crate::usermode::run(|| {
        let never = core::sync::atomic::AtomicBool::new(false);
        let ticks = time::tsc_hz() / 1000;
        let t = time::tsc();
        interrupts::halt_until(t + ticks, &never);
        time::tsc() > t
    });
    check!(woke, "a halt from ring 3 did not return");
    println!(
        "see: ring3: {N} iterations in {} us in ring 0, {} us in ring 3 (call included)",
        time::ticks_to_us(ring0_ticks),
        time::ticks_to_us(ring3_ticks)
    );
    Ok(())
}

/// SHA-256 through the backend chosen at boot, run in ring 3 (where the kernel hashes, and the
/// only ring in which `kvm_pvm` executes SHA-NI rather than emulating it): the FIPS 180-4 digest
/// of "abc", and a 5000-byte message fed in uneven pieces against sha2's software SHA-256.
fn sha256() -> TestResult {
    use see_guest_driver::sha256 as s;
    use sha2::Digest;
    /// SHA-256("abc"), FIPS 180-4 example B.1.
    const ABC: [u8; 32] = [
        0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22,
        0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00,
        0x15, 0xad,
    ];
    // All of it in ring 3, the message included: ring 0 is emulated under `kvm_pvm`.
    let (abc, pieces, reference) = crate::usermode::run(|| {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 31 + i / 7) as u8).collect();
        let mut h = s::Sha256::new();
        for piece in [&data[..3], &data[3..64], &data[64..4097], &data[4097..]] {
            h.update(piece);
        }
        let reference: [u8; 32] = sha2::Sha256::digest(&data).into();
        (s::sha256(b"abc"), h.finalize(), reference)
    });
    let backend = crate::sha256_name(s::backend());
    check!(abc == ABC, "{backend}: SHA-256(\"abc\") = {abc:02x?}");
    check!(
        pieces == reference,
        "{backend}: 5000 bytes in pieces give {pieces:02x?}, sha2 {reference:02x?}"
    );
    println!("see: sha256: {backend}");
    Ok(())
}

/// Two draws of the session-nonce source differ.
fn entropy() -> TestResult {
    let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
    crate::prefetch::entropy::fill(&mut a);
    crate::prefetch::entropy::fill(&mut b);
    check!(a != b, "two nonces are equal");
    println!(
        "see: entropy: rdrand {}",
        if crate::prefetch::entropy::has_rdrand() {
            "yes"
        } else {
            "no (TSC jitter only)"
        }
    );
    Ok(())
}

fn exceptions() -> TestResult {
    let unmapped = 0x0000_00ff_0000_0000u64; // beyond the 4 GiB identity map
    match interrupts::probe_read(unmapped) {
        Ok(v) => {
            return Err(alloc::format!(
                "read of unmapped {unmapped:#x} returned {v:#x}"
            ))
        }
        Err(f) => check!(
            f.vector == 14 && f.cr2 == unmapped && f.error_code & 1 == 0,
            "unmapped read gave {f:?}, expected #PF (not-present) with CR2 {unmapped:#x}"
        ),
    }
    let non_canonical = 0x8000_0000_0000_0000u64;
    match interrupts::probe_read(non_canonical) {
        Ok(v) => {
            return Err(alloc::format!(
                "read of non-canonical address returned {v:#x}"
            ))
        }
        Err(f) => check!(
            f.vector == 13,
            "non-canonical read gave {f:?}, expected #GP"
        ),
    }
    let mapped = crate::boot::kernel_range().0;
    check!(
        interrupts::probe_read(mapped).is_ok(),
        "read of mapped {mapped:#x} faulted"
    );
    Ok(())
}

static UART_IRQS: AtomicU32 = AtomicU32::new(0);

fn on_uart_irq() {
    // Acknowledge the transmitter-empty interrupt and turn it off again.
    console::with_uart(|u| {
        u.interrupt_id();
        u.set_interrupt_enable(0);
    });
    UART_IRQS.fetch_add(1, Ordering::SeqCst);
}

/// The whole device-interrupt path: UART -> VMM irqfd -> I/O APIC -> local APIC -> IDT -> EOI.
fn uart_interrupt() -> TestResult {
    UART_IRQS.store(0, Ordering::SeqCst);
    let vector = interrupts::register_irq(u32::from(COM1_GSI), on_uart_irq)
        .map_err(|e| alloc::format!("register GSI {COM1_GSI}: {e}"))?;
    console::with_uart(|u| u.set_interrupt_enable(0x02));
    cpu_irq::enable();
    let deadline = Deadline::after_us(1_000_000);
    while UART_IRQS.load(Ordering::SeqCst) == 0 && !deadline.expired() {
        core::hint::spin_loop();
    }
    cpu_irq::disable();
    interrupts::unregister_irq(u32::from(COM1_GSI));
    let n = UART_IRQS.load(Ordering::SeqCst);
    check!(n >= 1, "no interrupt on vector {vector} within 1 s");
    Ok(())
}

//! The SEE guest kernel: a small `no_std` x86_64 kernel booted through the PVH entry point.
//!
//! Boot: the PVH entry (`boot`) switches to long mode and calls [`kernel_main`], which sets up
//! the console, GDT, IDT, memory map, heap and clock, prints a banner and a "ready" line, runs
//! the self-tests and ends the VM through the exit port (see docs/ARCHITECTURE.md for ports,
//! exit codes and command-line keys).
//!
//! The internal API a driver builds on: `console` (`print!`/`println!`), `time` (kvmclock or TSC,
//! TSC deadlines), `memmap` (RAM and the shared window), `cmdline` (virtio-mmio devices),
//! `interrupts` (`register_irq` for I/O APIC-routed device interrupts) and `exit`.

#![no_std]
#![no_main]

extern crate alloc;

#[macro_use]
mod console;
mod boot;
mod exit;
mod gdt;
mod heap;
mod interrupts;
mod keys;
mod memmap;
mod prefetch;
mod ringbench;
mod selftest;
mod time;
mod usermode;

use exit::{Progress, Status};
use see_abi::cmdline::{self as key, Cmdline};

/// Why the boot information is unusable.
enum BootError {
    /// The parser refused it.
    Info(memmap::BootInfoError),
    /// It parsed, but RAM, the shared window, a device, the kernel or the heap overlap.
    Layout(see_abi::layout::LayoutError),
}

/// The 64-bit entry, called by the boot code with the address of `hvm_start_info`.
#[unsafe(no_mangle)]
extern "C" fn kernel_main(start_info: u64) -> ! {
    exit::progress(Progress::Entry);
    console::init();
    gdt::init();
    interrupts::init();
    // In ring 3, where PVM runs the parser and the layout check natively: about 4 ms of
    // emulated ring 0 otherwise (both are pure code over identity-mapped memory).
    let (map, heap_span) = usermode::run(|| {
        let map = memmap::init(start_info).map_err(BootError::Info)?;
        let heap = see_abi::layout::check(map, boot::kernel_range()).map_err(BootError::Layout)?;
        Ok((map, heap))
    })
    .unwrap_or_else(|e: BootError| match e {
        BootError::Info(e) => panic!("boot information: {e}"),
        BootError::Layout(e) => {
            // Fail closed, on every boot: never run on memory the host could also be using.
            println!("see: bad boot layout: {e}; refusing to run");
            exit::exit(Status::BadLayout)
        }
    });
    let heap = heap::init(heap_span);
    let tsc_hz = time::init().unwrap_or_else(|e| panic!("clock: {e}"));
    // SAFETY: the boot code enabled SSE state (CR4.OSFXSR set, CR0.EM clear). This kernel is
    // soft-float: no code of its own (interrupt handlers and the switches to and from ring 3
    // included) keeps values in xmm registers, so the SHA-NI function may overwrite them; and
    // it runs on one CPU. (Under kvm_pvm, hash in ring 3 only from here on: the ring-0
    // emulator cannot run SHA-NI code and ends the VM; see see_guest_driver::sha256.)
    let sha256 = unsafe { see_guest_driver::sha256::enable_hardware() };

    println!(
        "SEE kernel {} (x86_64, PVH boot, ABI {})",
        env!("CARGO_PKG_VERSION"),
        see_abi::ABI_VERSION
    );
    exit::progress(Progress::Ready);
    println!("see: ready in {} us", time::since_entry_us());

    report(map, heap, tsc_hz, sha256);
    let cmdline = Cmdline::new(map.cmdline());
    match cmdline.get(key::TEST) {
        Some("panic") => panic!("see.test=panic: panicking on request"),
        Some("fault") => {
            let addr = 0x0000_5ee0_dead_0000u64 as *const u64;
            // SAFETY: deliberately reads an unmapped address to raise a page fault that the
            // exception handler reports (see.test=fault); the read never completes.
            let v = unsafe { addr.read_volatile() };
            panic!("read of unmapped memory returned {v:#x}");
        }
        Some("ring3-bench") => exit::exit(ringbench::run()),
        _ => {}
    }
    if cmdline.get(key::SELFTEST) != Some("0") {
        match selftest::run(cmdline.get(key::TEST) == Some("selftest-fail")) {
            Ok(n) => {
                exit::progress(Progress::SelfTestsPassed);
                println!("see: self-tests passed ({n})");
            }
            Err(n) => {
                println!("see: {n} self-test(s) FAILED");
                exit::exit(Status::SelfTestFailure);
            }
        }
    }
    if let Some(app) = cmdline.get(key::APP) {
        let status = prefetch::run_app(app, &cmdline, map);
        println!("see: app {app} ended in {} us", time::since_entry_us());
        exit::exit(status);
    }
    println!("see: done in {} us", time::since_entry_us());
    exit::exit(Status::Success)
}

/// Most characters of the command line the boot report shows.
const CMDLINE_SHOWN: usize = 1024;

fn report(
    map: &memmap::MemoryMap<'_>,
    heap: heap::HeapInfo,
    tsc_hz: u64,
    sha256: see_guest_driver::sha256::Backend,
) {
    let cmdline = Cmdline::new(map.cmdline());
    // The SHA-256 backend rides on this line: every console byte costs a VM exit.
    println!(
        "see: memory: {} KiB RAM, heap {} KiB at {:#x}, TSC {} kHz ({}), sha256 {}",
        map.ram_bytes() >> 10,
        heap.size >> 10,
        heap.start,
        tsc_hz / 1000,
        time::source().name(),
        sha256_name(sha256)
    );
    match map.shared_window() {
        Some(w) => println!("see: shared window: {} KiB at {:#x}", w.len >> 10, w.start),
        None => println!("see: shared window: none"),
    }
    // A long command line (an app registry of hundreds of entries) is shown cut short: every
    // console byte costs a VM exit.
    let line = cmdline.as_str();
    match line.char_indices().nth(CMDLINE_SHOWN) {
        None => println!("see: cmdline: {line:?}"),
        Some((cut, _)) => println!("see: cmdline: {:?}... ({} bytes)", &line[..cut], line.len()),
    }
    for dev in cmdline.virtio_mmio_devices() {
        match dev {
            Ok(d) => println!(
                "see: virtio-mmio device: {} bytes at {:#x}, GSI {}",
                d.size, d.base, d.gsi
            ),
            Err(e) => println!("see: {e}"),
        }
    }
    for key in cmdline.unknown_keys() {
        println!("see: ignoring unknown command-line key {key:?}");
    }
}

/// How the boot report and the self-tests name a SHA-256 backend.
fn sha256_name(backend: see_guest_driver::sha256::Backend) -> &'static str {
    match backend {
        see_guest_driver::sha256::Backend::ShaNi => "SHA-NI",
        see_guest_driver::sha256::Backend::Software => "software",
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    x86_64::instructions::interrupts::disable();
    console::print_emergency(format_args!("see: PANIC: {info}\n"));
    exit::exit(Status::Panic)
}

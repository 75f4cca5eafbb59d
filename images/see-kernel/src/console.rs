//! The serial console: a 16550 UART driver on COM1 and the `print!` / `println!` macros.
//!
//! Every port access is a VM exit (about 12 us on the nested KVM this runs on), so output is
//! formatted into a line buffer first and then written in bursts of one `rep outsb` each (one
//! exit for up to 16 bytes, the 16550A FIFO depth), the transmitter status read once per
//! burst. A line is never
//! interleaved with another: the console lock is taken with interrupts disabled.

use core::fmt::{self, Write};

use spin::Mutex;
use x86_64::instructions::{interrupts, port::Port};

/// I/O base of COM1.
pub const COM1: u16 = see_abi::ports::COM1_BASE;
/// The legacy interrupt line of COM1.
pub const COM1_GSI: u8 = see_abi::ports::COM1_IRQ as u8;

const THR: u16 = 0;
const IER: u16 = 1;
const IIR_FCR: u16 = 2;
const LCR: u16 = 3;
const MCR: u16 = 4;
const LSR: u16 = 5;
const LSR_THR_EMPTY: u8 = 0x20;
const FIFO_DEPTH: usize = 16;
/// Upper bound on status polls per burst, so a broken UART cannot hang the kernel.
const MAX_POLLS: u32 = 100_000;

/// A 16550 UART at an I/O base.
#[derive(Debug)]
pub struct Uart {
    base: u16,
}

impl Uart {
    /// A driver for the UART at `base` (not yet initialised).
    pub const fn new(base: u16) -> Self {
        Self { base }
    }

    fn out(&self, reg: u16, value: u8) {
        // SAFETY: the port belongs to this UART; writing its registers has no memory effects.
        unsafe { Port::<u8>::new(self.base + reg).write(value) }
    }

    /// Writes `bytes` to one register with `rep outsb`: KVM hands a string write to the VMM
    /// in one exit (the VMM feeds each byte to the UART), where byte-by-byte `out` costs one
    /// exit per byte.
    fn out_string(&self, reg: u16, bytes: &[u8]) {
        // SAFETY: `rep outsb` reads `bytes.len()` bytes from `bytes` (valid for reads; the
        // direction flag is clear, as the ABI guarantees) and writes them to this UART's
        // register, which has no memory effects.
        unsafe {
            core::arch::asm!(
                "rep outsb",
                in("dx") self.base + reg,
                inout("rsi") bytes.as_ptr() => _,
                inout("rcx") bytes.len() => _,
                options(nostack, preserves_flags, readonly)
            );
        }
    }

    fn inp(&self, reg: u16) -> u8 {
        // SAFETY: as in `out`; reading a UART register has no memory effects.
        unsafe { Port::<u8>::new(self.base + reg).read() }
    }

    /// 115200 baud, 8N1, FIFOs on, interrupts off.
    pub fn init(&self) {
        self.out(IER, 0x00);
        self.out(LCR, 0x80); // DLAB on: divisor latch
        self.out(0, 0x01); // divisor 1 = 115200 baud
        self.out(1, 0x00);
        self.out(LCR, 0x03); // 8N1, DLAB off
        self.out(IIR_FCR, 0xC7); // FIFO on, cleared, 14-byte threshold
        self.out(MCR, 0x0B); // DTR, RTS, OUT2 (interrupt line enable)
    }

    /// Writes `bytes`, waiting for an empty transmitter before each FIFO-sized chunk.
    pub fn write_burst(&self, bytes: &[u8]) {
        for chunk in bytes.chunks(FIFO_DEPTH) {
            let mut polls = 0;
            while self.inp(LSR) & LSR_THR_EMPTY == 0 && polls < MAX_POLLS {
                core::hint::spin_loop();
                polls += 1;
            }
            self.out_string(THR, chunk);
        }
    }

    /// Sets the interrupt-enable register (bit 1: transmitter empty, bit 0: data received).
    pub fn set_interrupt_enable(&self, mask: u8) {
        self.out(IER, mask);
    }

    /// Reads the interrupt-identification register, which acknowledges a transmitter-empty
    /// interrupt.
    pub fn interrupt_id(&self) -> u8 {
        self.inp(IIR_FCR)
    }
}

/// Collects formatted text and hands it to the UART a line (or a full buffer) at a time.
struct LineWriter<'a> {
    uart: &'a Uart,
    buf: [u8; 160],
    len: usize,
}

impl LineWriter<'_> {
    fn flush(&mut self) {
        self.uart.write_burst(&self.buf[..self.len]);
        self.len = 0;
    }
}

impl Write for LineWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
            if b == b'\n' {
                self.flush();
            }
        }
        Ok(())
    }
}

static CONSOLE: Mutex<Uart> = Mutex::new(Uart::new(COM1));

/// Initialises COM1.
pub fn init() {
    interrupts::without_interrupts(|| CONSOLE.lock().init());
}

/// Runs `f` on the console UART with the console lock held and interrupts disabled.
pub fn with_uart<R>(f: impl FnOnce(&Uart) -> R) -> R {
    interrupts::without_interrupts(|| f(&CONSOLE.lock()))
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments) {
    if crate::usermode::in_user_mode() {
        return print_from_ring3(args);
    }
    with_uart(|uart| write_to(uart, args));
}

/// Prints without taking the console lock: for the panic and exception paths, where the lock
/// may be held by the code that failed.
pub fn print_emergency(args: fmt::Arguments) {
    if crate::usermode::in_user_mode() {
        return print_from_ring3(args);
    }
    write_to(&Uart::new(COM1), args);
}

/// Ring 3 cannot reach the UART's ports: format into a line here, then write it from ring 0.
fn print_from_ring3(args: fmt::Arguments) {
    struct Line {
        buf: [u8; 512],
        len: usize,
    }
    impl Write for Line {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            for &b in s.as_bytes() {
                if self.len == self.buf.len() {
                    crate::usermode::console_write(&self.buf);
                    self.len = 0;
                }
                self.buf[self.len] = b;
                self.len += 1;
            }
            Ok(())
        }
    }
    let mut line = Line {
        buf: [0; 512],
        len: 0,
    };
    let _ = line.write_fmt(args);
    crate::usermode::console_write(&line.buf[..line.len]);
}

/// Writes raw bytes to the UART (ring 0; the console lock is taken).
pub fn write_bytes(bytes: &[u8]) {
    with_uart(|uart| uart.write_burst(bytes));
}

fn write_to(uart: &Uart, args: fmt::Arguments) {
    let mut w = LineWriter {
        uart,
        buf: [0; 160],
        len: 0,
    };
    // A formatting error can only come from a Display impl; print what was formatted.
    let _ = w.write_fmt(args);
    w.flush();
}

/// Prints to the serial console.
#[allow(unused_macros)]
macro_rules! print {
    ($($arg:tt)*) => ($crate::console::_print(format_args!($($arg)*)));
}

/// Prints a line to the serial console.
macro_rules! println {
    () => (print!("\n"));
    ($($arg:tt)*) => ($crate::console::_print(format_args!("{}\n", format_args!($($arg)*))));
}

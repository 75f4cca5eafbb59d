//! COM1: a vm-superio 16550 UART whose interrupt is an irqfd and whose output goes to stdout,
//! a file or nowhere, one write per line.

use std::{
    fs::File,
    io::{self, Write},
};

use vm_superio::{serial::NoEvents, Serial, Trigger};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::{bus::BusDevice, config::SerialOutput};

pub use see_abi::ports::{COM1_BASE, COM1_IRQ as COM1_GSI, COM1_LEN};

/// Raises the UART's interrupt by writing its irqfd.
#[derive(Debug)]
pub struct IrqTrigger(EventFd);

impl Trigger for IrqTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Buffers console bytes and writes a whole line at a time. The UART flushes after every byte;
/// this makes one `write(2)` per line instead, so a reader sees whole lines.
pub struct LineBuffered {
    out: Option<Box<dyn Write + Send>>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for LineBuffered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineBuffered")
            .field("discard", &self.out.is_none())
            .field("buffered", &self.buf.len())
            .finish()
    }
}

impl LineBuffered {
    const MAX_LINE: usize = 4096;

    /// Buffers for `out`; `None` discards everything.
    pub fn new(out: Option<Box<dyn Write + Send>>) -> Self {
        Self {
            out,
            buf: Vec::with_capacity(256),
        }
    }

    /// Writes whatever is buffered, complete line or not.
    pub fn flush_all(&mut self) -> io::Result<()> {
        if let Some(out) = &mut self.out {
            out.write_all(&self.buf)?;
            out.flush()?;
        }
        self.buf.clear();
        Ok(())
    }
}

impl Write for LineBuffered {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.ends_with(b"\n") || self.buf.len() >= Self::MAX_LINE {
            self.flush_all()
        } else {
            Ok(())
        }
    }
}

/// The COM1 device on the port I/O bus.
pub struct SerialConsole {
    uart: Serial<IrqTrigger, NoEvents, LineBuffered>,
    /// Whether an output error was logged already (a closed stdout fails every byte).
    warned: bool,
}

impl std::fmt::Debug for SerialConsole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialConsole").finish_non_exhaustive()
    }
}

impl SerialConsole {
    /// A UART writing to `output`. Returns it with the eventfd to register as its irqfd.
    pub fn new(output: &SerialOutput) -> io::Result<(Self, EventFd)> {
        let out: Option<Box<dyn Write + Send>> = match output {
            SerialOutput::Stdout => Some(Box::new(io::stdout())),
            SerialOutput::File(path) => Some(Box::new(File::create(path).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot create the serial output file {}: {e}",
                        path.display()
                    ),
                )
            })?)),
            SerialOutput::Off => None,
        };
        let irq = EventFd::new(EFD_NONBLOCK)?;
        let trigger = IrqTrigger(irq.try_clone()?);
        Ok((
            Self {
                uart: Serial::new(trigger, LineBuffered::new(out)),
                warned: false,
            },
            irq,
        ))
    }

    /// Writes out any partial line (at VM exit).
    pub fn flush(&mut self) -> io::Result<()> {
        self.uart.writer_mut().flush_all()
    }
}

impl BusDevice for SerialConsole {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        if let Some(first) = data.first_mut() {
            *first = self.uart.read(offset as u8);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        // A string instruction (`rep outsb`) delivers several bytes for the same register.
        for &byte in data {
            if let Err(e) = self.uart.write(offset as u8, byte) {
                if !std::mem::replace(&mut self.warned, true) {
                    log::warn!("serial console output failed, dropping output: {e:?}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Sink {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().push(data.to_vec());
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn one_write_per_line() {
        let sink = Sink::default();
        let mut lb = LineBuffered::new(Some(Box::new(sink.clone())));
        for b in b"hello\nwor" {
            lb.write_all(&[*b]).unwrap();
            lb.flush().unwrap();
        }
        assert_eq!(*sink.0.lock().unwrap(), vec![b"hello\n".to_vec()]);
        lb.flush_all().unwrap();
        assert_eq!(sink.0.lock().unwrap()[1], b"wor");
    }

    #[test]
    fn uart_bytes_reach_the_output_and_raise_the_irq() {
        let path = tempfile::NamedTempFile::new().unwrap().into_temp_path();
        let (mut uart, irq) = SerialConsole::new(&SerialOutput::File(path.to_path_buf())).unwrap();
        uart.write(1, &[0x02]); // IER: transmitter-empty interrupt on
        assert_eq!(irq.read().unwrap(), 1, "enabling THRE raises the interrupt");
        uart.write(0, b"ok\n");
        uart.flush().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"ok\n");
        let mut lsr = [0u8];
        uart.read(5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0, "transmitter always empty");
    }
}

//! Bounds-checked little-endian reading and writing over byte slices.

use crate::WireError;

/// A cursor over bytes the peer controls: every read is bounds-checked.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, pos: 0, what }
    }

    /// Fails unless at least `need` bytes are available from the start.
    pub(crate) fn require(buf: &[u8], need: usize, what: &'static str) -> Result<(), WireError> {
        if buf.len() < need {
            return Err(WireError::Truncated {
                what,
                need,
                have: buf.len(),
            });
        }
        Ok(())
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or(WireError::Truncated {
                what: self.what,
                need: self.pos.saturating_add(n),
                have: self.buf.len(),
            })?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Reads a reserved field that must be zero.
    pub(crate) fn zero_u16(&mut self, field: &'static str) -> Result<(), WireError> {
        match self.u16()? {
            0 => Ok(()),
            _ => Err(WireError::ReservedNotZero(field)),
        }
    }

    /// Reads a reserved field that must be zero.
    pub(crate) fn zero_u32(&mut self, field: &'static str) -> Result<(), WireError> {
        match self.u32()? {
            0 => Ok(()),
            _ => Err(WireError::ReservedNotZero(field)),
        }
    }

    /// The bytes not read yet.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }
}

/// A cursor writing into a caller-provided buffer; fails instead of overflowing it.
pub(crate) struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    /// Checks up front that `need` bytes fit, so an encoder never writes half a structure.
    pub(crate) fn new(buf: &'a mut [u8], need: usize) -> Result<Self, WireError> {
        if buf.len() < need {
            return Err(WireError::BufferTooSmall {
                need,
                have: buf.len(),
            });
        }
        Ok(Self { buf, pos: 0 })
    }

    pub(crate) fn bytes(&mut self, src: &[u8]) {
        // The constructor checked the total size; a short write here is a bug in an encoder,
        // which the round-trip tests catch, so clamp rather than panic.
        let end = (self.pos + src.len()).min(self.buf.len());
        let n = end - self.pos;
        self.buf[self.pos..end].copy_from_slice(&src[..n]);
        self.pos = end;
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.bytes(&v.to_le_bytes());
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }

    pub(crate) fn zeros(&mut self, n: usize) {
        for _ in 0..n {
            self.u8(0);
        }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }
}

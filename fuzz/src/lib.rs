//! Shared pieces of the fuzz targets: a reader that turns the fuzzer's bytes into numbers and
//! choices, never failing (past the end it reads zeros and says it is done).

/// Whether every byte of `bytes` is `value`. It compares a page at a time: a loop over each byte
/// costs the fuzzer a comparison callback per byte, and the blocks checked reach megabytes.
pub fn all_bytes(bytes: &[u8], value: u8) -> bool {
    let page = [value; 4096];
    bytes.chunks(page.len()).all(|c| c == &page[..c.len()])
}

/// Reads numbers from the fuzzer's input, little-endian; past the end every read is zero.
#[derive(Debug)]
pub struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    /// A reader over `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The next byte.
    pub fn u8(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((first, rest)) => {
                self.bytes = rest;
                *first
            }
            None => 0,
        }
    }

    /// The next 16-bit number.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// The next 32-bit number.
    pub fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | (u32::from(self.u16()) << 16)
    }

    /// The next 64-bit number.
    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// A number below `n` (`0` if `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.u64() % n }
    }

    /// A number that is usually small (a byte), sometimes any 64-bit value: edges get tried.
    pub fn size(&mut self) -> u64 {
        match self.u8() % 8 {
            0 => self.u64(),
            1 => u64::MAX - u64::from(self.u8()),
            2 => 1u64 << (self.u8() % 64),
            _ => u64::from(self.u8()),
        }
    }
}

//! Pieces shared by the integration tests.

/// Whether every byte of `bytes` is `value`. The bytes are compared a slice at a time with a
/// slice filled with `value`: one comparison of memory, where a loop over each byte would be
/// interpreted step by step under Miri (a 256 KiB block took half a minute).
pub fn all_bytes_are(bytes: &[u8], value: u8) -> bool {
    let filled = [value; 4096];
    bytes.chunks(filled.len()).all(|c| c == &filled[..c.len()])
}

//! Loading a Linux kernel for the PVH entry: the vmlinux ELF out of a bzImage (its LZ4
//! payload decompressed), its loadable segments, and its `XEN_ELFNOTE_PHYS32_ENTRY`.

/// The ELF image inside a bzImage whose payload is LZ4 (legacy frame), as Debian's kernels are.
pub fn vmlinux_from_bzimage(bz: &[u8]) -> Result<Vec<u8>, String> {
    let u32_at = |at: usize| -> Result<u32, String> {
        bz.get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
            .ok_or_else(|| format!("bzImage too short for offset {at:#x}"))
    };
    if bz.get(0x202..0x206) != Some(b"HdrS") {
        return Err("not a bzImage (no HdrS)".into());
    }
    let setup_sects = usize::from(*bz.get(0x1f1).ok_or("short")?).max(4);
    let start = (setup_sects + 1) * 512;
    let offset = start + u32_at(0x248)? as usize;
    let length = u32_at(0x24c)? as usize;
    let payload = bz
        .get(offset..offset + length)
        .ok_or("payload outside the file")?;
    unlz4_legacy(payload)
}

/// Decompresses the LZ4 legacy frame format (magic `0x184c2102`, then blocks of a 32-bit
/// compressed size and an LZ4 block), stopping at anything that is not a whole block (the
/// kernel appends its uncompressed size).
fn unlz4_legacy(data: &[u8]) -> Result<Vec<u8>, String> {
    if data.get(..4) != Some(&0x184c_2102u32.to_le_bytes()[..]) {
        return Err("payload is not LZ4 legacy".into());
    }
    let mut out = Vec::with_capacity(data.len() * 3);
    let mut at = 4;
    while let Some(size) = data.get(at..at + 4) {
        let size = u32::from_le_bytes(size.try_into().unwrap()) as usize;
        let Some(block) = data.get(at + 4..at + 4 + size) else {
            break;
        };
        if size == 0 {
            break;
        }
        lz4_block(block, &mut out)?;
        at += 4 + size;
    }
    Ok(out)
}

fn lz4_block(src: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let bad = || "corrupt LZ4 block".to_string();
    let mut i = 0;
    let length = |i: &mut usize, mut n: usize| -> Result<usize, String> {
        if n == 15 {
            loop {
                let b = *src.get(*i).ok_or_else(bad)?;
                *i += 1;
                n += usize::from(b);
                if b != 255 {
                    break;
                }
            }
        }
        Ok(n)
    };
    loop {
        let token = *src.get(i).ok_or_else(bad)?;
        i += 1;
        let literals = length(&mut i, usize::from(token >> 4))?;
        out.extend_from_slice(src.get(i..i + literals).ok_or_else(bad)?);
        i += literals;
        if i == src.len() {
            return Ok(());
        }
        let offset = usize::from(u16::from_le_bytes(
            src.get(i..i + 2).ok_or_else(bad)?.try_into().unwrap(),
        ));
        i += 2;
        let len = length(&mut i, usize::from(token & 15))? + 4;
        if offset == 0 || offset > out.len() {
            return Err(bad());
        }
        let from = out.len() - offset;
        for k in 0..len {
            let b = out[from + k];
            out.push(b);
        }
    }
}

/// A loadable segment: guest physical address and bytes.
pub struct Segment<'a> {
    pub paddr: u64,
    pub bytes: &'a [u8],
}

/// The PT_LOAD segments of an ELF64 image and its PVH entry point.
pub fn elf_segments(elf: &[u8]) -> Result<(Vec<Segment<'_>>, u64), String> {
    let rd = |at: usize, n: usize| -> Result<u64, String> {
        let b = elf.get(at..at + n).ok_or("ELF too short")?;
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(b);
        Ok(u64::from_le_bytes(v))
    };
    if elf.get(..4) != Some(b"\x7fELF") || elf.get(4) != Some(&2) {
        return Err("not an ELF64 image".into());
    }
    let phoff = rd(0x20, 8)? as usize;
    let phentsize = rd(0x36, 2)? as usize;
    let phnum = rd(0x38, 2)? as usize;
    let mut segments = Vec::new();
    let mut entry = None;
    for n in 0..phnum {
        let ph = phoff + n * phentsize;
        let ty = rd(ph, 4)?;
        let offset = rd(ph + 8, 8)? as usize;
        let paddr = rd(ph + 24, 8)?;
        let filesz = rd(ph + 32, 8)? as usize;
        let bytes = elf
            .get(offset..offset + filesz)
            .ok_or("segment outside the file")?;
        match ty {
            1 => segments.push(Segment { paddr, bytes }),
            4 => entry = entry.or(pvh_entry(bytes)),
            _ => {}
        }
    }
    Ok((segments, entry.ok_or("no XEN_ELFNOTE_PHYS32_ENTRY note")?))
}

/// `XEN_ELFNOTE_PHYS32_ENTRY` (type 18, owner "Xen") in a PT_NOTE segment.
fn pvh_entry(mut notes: &[u8]) -> Option<u64> {
    let word = |b: &[u8], at: usize| -> Option<usize> {
        Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    while notes.len() >= 12 {
        let (namesz, descsz, ty) = (word(notes, 0)?, word(notes, 4)?, word(notes, 8)?);
        let name_end = 12 + namesz.next_multiple_of(4);
        let desc_end = name_end + descsz.next_multiple_of(4);
        let name = notes.get(12..12 + namesz)?;
        if ty == 18 && name.starts_with(b"Xen") {
            let desc = notes.get(name_end..name_end + descsz)?;
            let mut v = [0u8; 8];
            v[..descsz.min(8)].copy_from_slice(&desc[..descsz.min(8)]);
            return Some(u64::from_le_bytes(v));
        }
        notes = notes.get(desc_end..)?;
    }
    None
}

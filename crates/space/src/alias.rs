//! Regions over the same bytes of one file ([`Error::FileAliased`]): a guest write through one
//! would change the other's memory without marking its dirty log, and vm-memory users take
//! distinct guest ranges for distinct memory. Read-only regions may share bytes (one firmware
//! image at two addresses): nothing writes them. Adopted vm-memory mappings without a file are
//! compared by their host addresses (vm-memory maps one `MmapRegion` at two guest addresses).
//!
//! A file is known by its device and inode, not its path, once it is open (a hard link, a
//! symbolic link or `/proc/self/fd` names the same file); a plan, which reads nothing from the
//! host, compares the paths as written.

use std::collections::HashMap;
use std::path::Path;

use vm_memory::GuestMemoryRegion;

use crate::error::{Error, Result};
use crate::region::Region;
use crate::spec::{Backing, RegionSpec};

/// The bytes of one file a region maps.
#[derive(Clone, Copy, Debug)]
struct FileBytes {
    /// The file: device and inode, or a number per distinct path.
    file: (u64, u64),
    /// First byte.
    start: u64,
    /// Past the last byte.
    end: u64,
    writable: bool,
    /// The region's base address.
    base: u64,
    /// Its place in the list checked, so that the later one is named as the one added.
    order: usize,
}

impl FileBytes {
    fn new(file: (u64, u64), start: u64, spec: &RegionSpec, order: usize) -> Self {
        Self {
            file,
            start,
            end: start.saturating_add(spec.size()),
            writable: spec.protection().writable(),
            base: spec.base().0,
            order,
        }
    }

    fn clashes(&self, other: &Self) -> bool {
        self.file == other.file
            && self.start < other.end
            && other.start < self.end
            && (self.writable || other.writable)
    }

    fn error(&self, other: &Self) -> Error {
        let (added, there) = if self.order >= other.order {
            (self, other)
        } else {
            (other, self)
        };
        Error::FileAliased {
            base: added.base,
            other_base: there.base,
        }
    }
}

/// Whether another region may map the file of a region of this spec: every file but the ones
/// made for this region alone (a memfd, a hugetlbfs file created new and unlinked), which only
/// a `Backing::File` naming it through `/proc` (or an adopted mapping) can reach.
fn shareable(spec: &RegionSpec) -> bool {
    !matches!(spec.backing, Backing::Memfd | Backing::Hugetlbfs(_))
}

#[cfg(unix)]
fn identity(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

/// The file bytes a backed region maps, if it maps a file.
#[cfg(unix)]
fn of_region(region: &Region, order: usize) -> Result<Option<FileBytes>> {
    let Some(file) = GuestMemoryRegion::file_offset(region) else {
        return Ok(adopted_memory(region, order));
    };
    let meta = file.file().metadata().map_err(|source| Error::Os {
        op: "fstat",
        base: region.base().0,
        source,
    })?;
    Ok(Some(FileBytes::new(
        identity(&meta),
        file.start(),
        region.spec(),
        order,
    )))
}

/// No system but Unix maps files ([`Backing::File`] is refused there before it is checked).
#[cfg(not(unix))]
fn of_region(region: &Region, order: usize) -> Result<Option<FileBytes>> {
    Ok(adopted_memory(region, order))
}

/// The "file" of adopted vm-memory mappings without one: the process's address space, whose
/// bytes are host addresses. vm-memory maps one `MmapRegion` at two guest addresses
/// (`GuestRegionMmap::with_arc` of `get_mmap`), which are then two regions over the same
/// bytes; memory this crate mapped is never another region's.
const HOST_MEMORY: (u64, u64) = (u64::MAX, u64::MAX);

/// The host bytes of an adopted mapping without a file, as bytes of [`HOST_MEMORY`].
fn adopted_memory(region: &Region, order: usize) -> Option<FileBytes> {
    let (start, _) = region.adopted_host_range()?;
    Some(FileBytes::new(HOST_MEMORY, start, region.spec(), order))
}

/// The first two of `list` that clash, found after sorting by file and first byte: each entry
/// is compared with the farthest-reaching one before it in its file (writable or any), so the
/// cost is O(n log n).
fn first_clash(mut list: Vec<FileBytes>) -> Result<()> {
    list.sort_unstable_by_key(|b| (b.file, b.start, b.order));
    // The farthest-reaching entry so far in the current file, and the farthest writable one.
    let mut reach: Option<FileBytes> = None;
    let mut reach_writable: Option<FileBytes> = None;
    for b in list {
        if reach.is_some_and(|r| r.file != b.file) {
            reach = None;
            reach_writable = None;
        }
        let before = if b.writable { reach } else { reach_writable };
        if let Some(p) = before
            && p.clashes(&b)
        {
            return Err(p.error(&b));
        }
        if reach.is_none_or(|r| b.end > r.end) {
            reach = Some(b);
        }
        if b.writable && reach_writable.is_none_or(|r| b.end > r.end) {
            reach_writable = Some(b);
        }
    }
    Ok(())
}

/// Refuses two of `specs` naming the same path (as written) at overlapping offsets, one of them
/// writable. Reads nothing from the host.
pub(crate) fn check_paths(specs: &[RegionSpec]) -> Result<()> {
    let mut ids: HashMap<&Path, u64> = HashMap::new();
    let mut list = Vec::new();
    for (order, spec) in specs.iter().enumerate() {
        if let Backing::File { path, offset } = &spec.backing {
            let next = ids.len() as u64;
            let id = *ids.entry(path.as_path()).or_insert(next);
            list.push(FileBytes::new((id, 0), *offset, spec, order));
        }
    }
    first_clash(list)
}

/// Refuses two of `specs` naming the same file (by what their paths name now) at overlapping
/// offsets, one of them writable: the check before anything is mapped. A path that cannot be
/// looked up is left to the backing's own file checks.
pub(crate) fn check_files(specs: &[RegionSpec]) -> Result<()> {
    #[cfg(unix)]
    {
        let mut list = Vec::new();
        for (order, spec) in specs.iter().enumerate() {
            if let Backing::File { path, offset } = &spec.backing
                && let Ok(meta) = std::fs::metadata(path)
            {
                list.push(FileBytes::new(identity(&meta), *offset, spec, order));
            }
        }
        first_clash(list)
    }
    #[cfg(not(unix))]
    {
        let _ = specs;
        Ok(())
    }
}

/// Refuses two of `regions` (made, with their files open) that map the same bytes of one file,
/// one of them writable.
pub(crate) fn check_regions<'a>(regions: impl IntoIterator<Item = &'a Region>) -> Result<()> {
    let mut list = Vec::new();
    for (order, region) in regions.into_iter().enumerate() {
        list.extend(of_region(region, order)?);
    }
    first_clash(list)
}

/// Refuses `spec`, about to be mapped, if its file (by what its path names now) has bytes that
/// one of `others` maps, one of them writable. Only a [`Backing::File`] can name another's
/// file; a path that cannot be looked up is left to the backing's own file checks.
pub(crate) fn check_spec<'a>(
    spec: &RegionSpec,
    others: impl IntoIterator<Item = &'a Region>,
) -> Result<()> {
    #[cfg(unix)]
    {
        let Backing::File { path, offset } = &spec.backing else {
            return Ok(());
        };
        let Ok(meta) = std::fs::metadata(path) else {
            return Ok(());
        };
        let mine = FileBytes::new(identity(&meta), *offset, spec, usize::MAX);
        for other in others {
            if let Some(theirs) = of_region(other, 0)?
                && mine.clashes(&theirs)
            {
                return Err(mine.error(&theirs));
            }
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        let _ = (spec, others.into_iter());
        Ok(())
    }
}

/// Refuses `region` if it maps bytes of a file that one of `others` maps, one of them writable.
/// Two files this crate made (memfds, hugetlbfs files) are never one, so such pairs are not
/// looked at: inserting a memfd region costs one `fstat` per region whose file may be shared,
/// and nothing in a space of memfd regions alone.
pub(crate) fn check_region<'a>(
    region: &Region,
    others: impl IntoIterator<Item = &'a Region>,
) -> Result<()> {
    let has_bytes = |r: &Region| {
        GuestMemoryRegion::file_offset(r).is_some() || r.adopted_host_range().is_some()
    };
    if !has_bytes(region) {
        return Ok(());
    }
    let mine_shareable = shareable(region.spec());
    let mut mine = None;
    for other in others {
        if !has_bytes(other) || !(mine_shareable || shareable(other.spec())) {
            continue;
        }
        let bytes = match mine {
            Some(bytes) => bytes,
            None => match of_region(region, usize::MAX)? {
                Some(bytes) => *mine.insert(bytes),
                None => return Ok(()),
            },
        };
        if let Some(theirs) = of_region(other, 0)?
            && bytes.clashes(&theirs)
        {
            return Err(bytes.error(&theirs));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(file: u64, start: u64, end: u64, writable: bool, order: usize) -> FileBytes {
        FileBytes {
            file: (file, 0),
            start,
            end,
            writable,
            base: order as u64 * 0x1000,
            order,
        }
    }

    /// The sweep against a comparison of every pair.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "64,000 lists through safe code, which has no undefined behaviour to look for"
    )]
    fn first_clash_finds_a_clash_exactly_when_some_pair_clashes() {
        // Every list of up to 4 ranges over 2 files, starts and ends in 0..4.
        let mut choices = Vec::new();
        for file in 0..2 {
            for start in 0..4 {
                for end in start + 1..=4 {
                    for writable in [false, true] {
                        choices.push((file, start, end, writable));
                    }
                }
            }
        }
        // Every list of up to 3 of them.
        let mut lists: Vec<Vec<FileBytes>> = vec![Vec::new()];
        let mut last: Vec<Vec<FileBytes>> = vec![Vec::new()];
        for _ in 0..3 {
            let mut longer = Vec::new();
            for list in &last {
                for &(f, s, e, w) in &choices {
                    let mut l = list.clone();
                    l.push(bytes(f, s, e, w, l.len()));
                    longer.push(l);
                }
            }
            lists.extend(longer.iter().cloned());
            last = longer;
        }
        assert_eq!(lists.len(), 1 + 40 + 40 * 40 + 40 * 40 * 40);
        for list in &lists {
            let any = list
                .iter()
                .enumerate()
                .any(|(i, a)| list[i + 1..].iter().any(|b| a.clashes(b)));
            let found = first_clash(list.clone());
            assert_eq!(found.is_err(), any, "{list:?}");
            if let Err(Error::FileAliased { base, other_base }) = found {
                let a = list.iter().find(|b| b.base == base).unwrap();
                let b = list.iter().find(|b| b.base == other_base).unwrap();
                assert!(a.clashes(b) && a.order > b.order, "{list:?}");
            }
        }
    }
}

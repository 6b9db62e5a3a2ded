//! Dirty logging: `KVM_MEM_LOG_DIRTY_PAGES` per region, and [`DirtyBitmap`], one bit per host
//! page of a region, into which KVM's log and the VMM's own writes are merged.

use std::os::fd::AsRawFd;

use kvm_bindings::{KVM_MEM_LOG_DIRTY_PAGES, KVMIO, kvm_dirty_log, kvm_dirty_log__bindgen_ty_1};
use vm_memory::GuestAddress;

use crate::error::{Error, Result};
use crate::slots::{MemorySlots, Shared, State};

/// The largest range a bitmap covers: 128 PiB, above the user address space of any host with
/// 5-level page tables, so no region with host memory is larger.
const MAX_SIZE: u64 = 1 << 57;

/// One bit per page of one region: bit `i % 64` of word `i / 64` is page `i`, the page at
/// `base + i * page_size`. The same form as KVM's dirty log, so merging is a word-wise OR.
///
/// `clone` copies the words into a vector allocated infallibly (the process aborts if the heap
/// refuses it); [`try_clone`](Self::try_clone) returns an error instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirtyBitmap {
    base: GuestAddress,
    size: u64,
    page_size: u64,
    words: Vec<u64>,
}

impl DirtyBitmap {
    /// A clean bitmap of the `size` bytes at `base`, one bit per `page_size` bytes (the last
    /// page may be partial). It takes one 64-bit word per 64 pages, the last word partly used
    /// ([`pages`](Self::pages)` / 64` rounded up): `page_size` is a power of two of at least
    /// the host page size (the unit of KVM's dirty log; a larger one, such as a huge page, for
    /// a coarser record of the VMM's own), so with 4 KiB host pages a bitmap never takes more
    /// than 1/32768 of the range it covers plus 8 bytes. A large clean bitmap is fresh
    /// zero pages from the allocator: it takes memory as its words are written (by marks and
    /// fetches, or by [`clear`](Self::clear) and `clone`, which write every word).
    ///
    /// # Errors
    /// [`Error::InvalidBitmap`] for a page size that is not a power of two or is below the
    /// host page size, a zero size, a size above 128 PiB, a range past `u64::MAX`, or a bitmap
    /// this process cannot allocate.
    ///
    /// ```
    /// use memvisor_kvm::DirtyBitmap;
    /// use memvisor_space::vm_memory::GuestAddress;
    ///
    /// // KVM logs host pages: 4, 16 or 64 KiB.
    /// let page = memvisor_vmem::page_size() as u64;
    /// let mut bitmap = DirtyBitmap::new(GuestAddress(0x100_0000), 16 * page, page)?;
    /// bitmap.mark(GuestAddress(0x100_0000 + 2 * page), 8);
    /// assert!(bitmap.is_dirty(GuestAddress(0x100_0000 + 3 * page - 1)));
    /// assert_eq!(bitmap.dirty_pages().collect::<Vec<_>>(), [GuestAddress(0x100_0000 + 2 * page)]);
    /// # Ok::<(), memvisor_kvm::Error>(())
    /// ```
    pub fn new(base: GuestAddress, size: u64, page_size: u64) -> Result<Self> {
        let invalid = || Error::InvalidBitmap {
            base: base.0,
            size,
            page_size,
        };
        if !page_size.is_power_of_two()
            || page_size < host_page_size()
            || size == 0
            || size > MAX_SIZE
            || base.0.checked_add(size - 1).is_none()
        {
            return Err(invalid());
        }
        let words =
            usize::try_from(size.div_ceil(page_size).div_ceil(64)).map_err(|_| invalid())?;
        Ok(Self {
            base,
            size,
            page_size,
            words: zeroed_words(words).ok_or_else(invalid)?,
        })
    }

    /// The region's guest base.
    #[must_use]
    pub fn base(&self) -> GuestAddress {
        self.base
    }

    /// The region's size in bytes.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The bytes each bit stands for.
    #[must_use]
    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// A copy of the bitmap, as [`clone`](Clone::clone) makes, with the heap asked for its
    /// words (one per 64 pages) without aborting: `clone`, like every `Clone` of a vector,
    /// aborts the process if the heap refuses them.
    ///
    /// # Errors
    /// [`Error::InvalidBitmap`] (a bitmap this process cannot allocate) if the heap refuses the
    /// copy's words; the bitmap is unchanged.
    ///
    /// ```
    /// use memvisor_kvm::DirtyBitmap;
    /// use memvisor_space::vm_memory::GuestAddress;
    ///
    /// let page = memvisor_vmem::page_size() as u64;
    /// let mut bitmap = DirtyBitmap::new(GuestAddress(0), 128 * page, page)?;
    /// bitmap.mark(GuestAddress(0), 1);
    /// let copy = bitmap.try_clone()?;
    /// bitmap.clear();
    /// assert_eq!(copy.count(), 1);
    /// # Ok::<(), memvisor_kvm::Error>(())
    /// ```
    pub fn try_clone(&self) -> Result<Self> {
        let mut words = Vec::new();
        words
            .try_reserve_exact(self.words.len())
            .map_err(|_| Error::InvalidBitmap {
                base: self.base.0,
                size: self.size,
                page_size: self.page_size,
            })?;
        words.extend_from_slice(&self.words);
        Ok(Self {
            base: self.base,
            size: self.size,
            page_size: self.page_size,
            words,
        })
    }

    /// The bits, 64 pages a word.
    #[must_use]
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// The number of pages.
    #[must_use]
    pub fn pages(&self) -> u64 {
        self.size.div_ceil(self.page_size)
    }

    /// Whether the page holding `addr` is dirty (`false` outside the region).
    #[must_use]
    pub fn is_dirty(&self, addr: GuestAddress) -> bool {
        let Some(offset) = addr.0.checked_sub(self.base.0).filter(|&o| o < self.size) else {
            return false;
        };
        let page = offset / self.page_size;
        // `page < pages()`, so the word index fits the vector.
        let word = usize::try_from(page / 64).unwrap_or(usize::MAX);
        self.words
            .get(word)
            .is_some_and(|w| w & (1 << (page % 64)) != 0)
    }

    /// Marks the pages holding `addr..addr + len` dirty (the part inside the region), as a
    /// VMM does for its own writes to guest memory.
    pub fn mark(&mut self, addr: GuestAddress, len: u64) {
        if len == 0 {
            return;
        }
        // Inclusive ends: `base + size - 1` does not overflow (checked by `new`).
        let region_last = self.base.0 + (self.size - 1);
        let start = addr.0.max(self.base.0);
        let last = addr.0.saturating_add(len - 1).min(region_last);
        if start > last {
            return;
        }
        let first = (start - self.base.0) / self.page_size;
        let last = (last - self.base.0) / self.page_size;
        // A word at a time: the pages of `first..=last` in word `i` are the bits from
        // `first % 64` (in the first word) to `last % 64` (in the last).
        // `last < pages()`, so both word indices fit the vector.
        let (Ok(first_word), Ok(last_word)) =
            (usize::try_from(first / 64), usize::try_from(last / 64))
        else {
            return;
        };
        let Some(words) = self.words.get_mut(first_word..=last_word) else {
            return;
        };
        let count = words.len();
        for (i, w) in words.iter_mut().enumerate() {
            let low = if i == 0 { first % 64 } else { 0 };
            let high = if i + 1 == count { last % 64 } else { 63 };
            *w |= (u64::MAX >> (63 - high)) & (u64::MAX << low);
        }
    }

    /// The guest address of every dirty page, in order.
    pub fn dirty_pages(&self) -> impl Iterator<Item = GuestAddress> + '_ {
        self.words.iter().enumerate().flat_map(move |(i, &word)| {
            BitIter(word).map(move |bit| {
                GuestAddress(self.base.0 + (i as u64 * 64 + u64::from(bit)) * self.page_size)
            })
        })
    }

    /// The number of dirty pages.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Marks every page clean.
    pub fn clear(&mut self) {
        self.words.fill(0);
    }

    /// Marks dirty every page dirty in `other` (a word-wise OR).
    ///
    /// # Errors
    /// [`Error::BitmapMismatch`] if `other` covers another range or page size; `self` is then
    /// unchanged.
    pub fn merge(&mut self, other: &DirtyBitmap) -> Result<()> {
        if (other.base, other.size, other.page_size) != (self.base, self.size, self.page_size) {
            return Err(Error::BitmapMismatch {
                base: self.base.0,
                size: self.size,
                page_size: self.page_size,
                other_base: other.base.0,
                other_size: other.size,
                other_page_size: other.page_size,
            });
        }
        self.or_words(&other.words);
        Ok(())
    }

    /// ORs words of the same form in: words past the bitmap's, and bits past its last page
    /// (which KVM's reply should leave clear), are dropped, so every set bit is a page of the
    /// range.
    fn or_words(&mut self, words: &[u64]) {
        for (w, o) in self.words.iter_mut().zip(words) {
            *w |= o;
        }
        let used = self.pages() % 64;
        if let Some(last) = self.words.last_mut()
            && used != 0
        {
            *last &= !(u64::MAX << used);
        }
    }
}

/// `len` zero words (`len > 0`), or `None` if they cannot be allocated. Zeroed by the
/// allocator, which for a large block maps fresh zero pages: a clean bitmap takes memory only
/// where bits are set, not its whole size at once.
fn zeroed_words(len: usize) -> Option<Vec<u64>> {
    let layout = std::alloc::Layout::array::<u64>(len).ok()?;
    if layout.size() == 0 {
        return None;
    }
    // SAFETY: the layout's size is not zero.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<u64>();
    if ptr.is_null() {
        return None;
    }
    // SAFETY: `ptr` was allocated by the global allocator with the layout of `[u64; len]`
    // (what a `Vec<u64>` of capacity `len` uses), and zero bytes are `len` valid `u64`s.
    Some(unsafe { Vec::from_raw_parts(ptr, len, len) })
}

/// The set bits of a word, lowest first.
struct BitIter(u64);

impl Iterator for BitIter {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        if self.0 == 0 {
            return None;
        }
        let bit = self.0.trailing_zeros();
        self.0 &= self.0 - 1;
        Some(bit)
    }
}

/// `KVM_GET_DIRTY_LOG`: `_IOW(KVMIO, 0x42, struct kvm_dirty_log)`, in the ioctl encoding of
/// the architectures `kvm-bindings` has (x86-64, Arm64, RISC-V 64: write direction in bit 30,
/// argument size from bit 16, type from bit 8).
const KVM_GET_DIRTY_LOG: u64 = (1 << 30)
    | ((std::mem::size_of::<kvm_dirty_log>() as u64) << 16)
    | ((KVMIO as u64) << 8)
    | 0x42;

/// Memory that KVM's dirty logs are fetched into, kept from one fetch to the next (a fresh
/// reservation per fetch cost ten times the fetch of a 1 GiB region): `accessible` bytes of
/// committed read-write pages, then one inaccessible page. A log of `bytes` is placed to end
/// where the inaccessible page starts. A fetch grows it to the log fetched; a slot's deletion
/// shrinks it to the log of the largest region still registered when it holds more than twice
/// that log's pages ([`fit`](Self::fit)), so it holds at most twice the pages of that log (a
/// 32768th of the region with 4 KiB pages, rounded up to a page), unless the system refused
/// the smaller buffer, and a region plugged and unplugged in turn (whose log is at most twice
/// that one) does not make each fetch reserve anew.
#[derive(Debug, Default)]
pub(crate) struct LogBuffer(Option<(memvisor_vmem::Reservation, usize)>);

impl LogBuffer {
    /// Where a log of `bytes` (a multiple of 8) starts, after growing the buffer to hold it if
    /// needed; `None` if the memory is refused (the buffer is left as it was) or the size
    /// overflows.
    fn place(&mut self, bytes: usize) -> Option<*mut u64> {
        let held = self.0.as_ref().map_or(0, |(_, accessible)| *accessible);
        if held < bytes {
            self.0 = Some(Self::reserve(bytes)?);
        }
        let (buffer, accessible) = self.0.as_ref()?;
        // `accessible - bytes` is a multiple of 8 (both are), so the words are aligned; they end
        // where the inaccessible page starts.
        Some(
            buffer
                .as_ptr()
                .wrapping_add(accessible - bytes)
                .cast::<u64>(),
        )
    }

    /// Gives back what the buffer holds past the pages a log of `bytes` needs, if it holds
    /// more than twice those pages: a buffer of those pages replaces it (none for 0 bytes).
    /// If the system refuses the smaller one, the buffer stays as it is (it still serves every
    /// fetch).
    pub(crate) fn fit(&mut self, bytes: usize) {
        let Some((_, accessible)) = &self.0 else {
            return;
        };
        if bytes == 0 {
            self.0 = None;
            return;
        }
        let Some(needed) = bytes.checked_next_multiple_of(memvisor_vmem::page_size()) else {
            return;
        };
        // Only a buffer of more than twice the pages needed: one that a region plugged and
        // unplugged in turn grows a little past is kept for its next fetch.
        if needed
            .checked_mul(2)
            .is_some_and(|twice| *accessible > twice)
            && let Some(smaller) = Self::reserve(bytes)
        {
            self.0 = Some(smaller);
        }
    }

    /// A new buffer for a log of `bytes`: the log's pages, committed, then one page left
    /// inaccessible (never committed). `None` if the system refuses the memory or the size
    /// overflows.
    fn reserve(bytes: usize) -> Option<(memvisor_vmem::Reservation, usize)> {
        let page = memvisor_vmem::page_size();
        let accessible = bytes.checked_next_multiple_of(page)?;
        let buffer = memvisor_vmem::Reservation::builder()
            .mode(memvisor_vmem::CommitMode::Protected)
            .reserve(accessible.checked_add(page)?)
            .ok()?;
        buffer.commit(0, accessible).ok()?;
        Some((buffer, accessible))
    }

    /// The bytes of committed memory held for logs.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.0.as_ref().map_or(0, |(_, accessible)| *accessible)
    }
}

/// The bytes of KVM's dirty log of a region of `size` bytes: one bit per host page, in whole
/// 64-bit words. `None` if it does not fit `usize`.
pub(crate) fn log_bytes(size: u64) -> Option<usize> {
    let size = usize::try_from(size).ok()?;
    size.div_ceil(memvisor_vmem::page_size())
        .div_ceil(64)
        .checked_mul(8)
}

/// One `KVM_GET_DIRTY_LOG` of `slot`, registered for `region`: KVM's log as words, handed to
/// `take` (while the buffer they are in is held).
///
/// KVM writes the log of the slot it holds under that number, sized by that slot, which only
/// KVM knows: the VMM's own code may have deleted ours and registered other memory under the
/// number (through the `unsafe` `VmFd::set_user_memory_region`), or a second `MemorySlots` of
/// the same VM where `kcmp` cannot tell its descriptors apart may have. So the log is not
/// taken into a heap buffer sized for `region` (as `VmFd::get_dirty_log` does, which would let
/// KVM write past it): it ends right before an inaccessible page ([`LogBuffer`]), where KVM's
/// copy of a larger log stops with `EFAULT` ([`Error::DirtyLog`]). The words are cleared
/// before the call, so a smaller slot's log leaves the rest of them clear.
fn get_log(
    shared: &Shared,
    slot: u32,
    region: &memvisor_space::Region,
    take: impl FnOnce(&[u64]),
) -> Result<()> {
    let base = region.base().0;
    let too_big = || Error::TooBig {
        base,
        size: region.size(),
    };
    let bytes = log_bytes(region.size()).ok_or_else(too_big)?;
    #[cfg(test)]
    if shared.refuses_next_call() {
        return Err(Error::DirtyLog {
            slot,
            base,
            source: crate::KvmError::new(libc::EIO),
        });
    }
    let words = bytes / 8;
    let mut buffer = shared.log_buffer();
    let start = buffer.place(bytes).ok_or(Error::DirtyLog {
        slot,
        base,
        source: crate::KvmError::new(libc::ENOMEM),
    })?;
    // SAFETY: `start..start + words` is committed read-write memory of the buffer, aligned
    // for `u64`, which only this call uses (the buffer's lock is held).
    unsafe { start.write_bytes(0, words) };
    let mut log = kvm_dirty_log {
        slot,
        padding1: 0,
        // All 8 bytes cleared first: where a pointer is narrower, KVM still reads them all.
        __bindgen_anon_1: kvm_dirty_log__bindgen_ty_1 { padding2: 0 },
    };
    log.__bindgen_anon_1.dirty_bitmap = start.cast();
    // SAFETY: the descriptor is the VM's; KVM reads `log` and writes at most the log of the
    // slot it holds to `start`: the `bytes` from there are committed read-write memory of the
    // buffer, which nothing else refers to while its lock is held, and the page after them is
    // inaccessible, where KVM's copy of a longer log faults and the call fails (`EFAULT`).
    let ret = unsafe {
        libc::ioctl(
            shared.vm().as_raw_fd(),
            KVM_GET_DIRTY_LOG as _,
            std::ptr::from_ref(&log),
        )
    };
    if ret != 0 {
        return Err(Error::DirtyLog {
            slot,
            base,
            source: crate::KvmError::last(),
        });
    }
    // SAFETY: `start..start + words` is committed memory of the buffer (cleared above, then
    // written by KVM), aligned for `u64`, and no one writes it while the lock is held.
    take(unsafe { std::slice::from_raw_parts(start, words) });
    Ok(())
}

impl MemorySlots {
    /// Turns KVM's dirty logging (`KVM_MEM_LOG_DIRTY_PAGES`) on or off for the region starting
    /// at `base`. Turning it on from off starts with a clean log. Turning it on while it is on
    /// changes nothing, as KVM changes nothing for flags that do not change: the log keeps
    /// every page written since the last fetch, so a VMM may call it to make sure logging is
    /// on without losing any (a migration's next fetch still gives them). To start clean,
    /// fetch the log and drop it, or turn logging off and on again.
    ///
    /// Logging is per region, and every region starts without it: those registered by
    /// [`attach`](Self::attach), and every region inserted or plugged later, also one at the
    /// base of a region that logged (removed and inserted again, it is a new slot with new
    /// flags). So a VMM that logs the whole VM (a migration) turns logging on for each region
    /// it inserts or plugs meanwhile, then copies that region whole: what the guest wrote
    /// there before this call is in no log, and fetching before it fails with
    /// [`Error::DirtyLog`] (`ENOENT`).
    ///
    /// Turning it on while on keeps, likewise, the pages a removal of the region owes, when a
    /// region listener after this one refused it (or while it is under way, below): KVM
    /// dropped the slot's log with the slot, so the next fetch reports every page of the
    /// region, once. Turning logging off drops them, as KVM drops its log with the flag.
    ///
    /// While another thread (or a region listener after this one) removes the region, from
    /// KVM's deletion of the slot until the space publishes the removal or undoes it (a
    /// listener after this one refused it), the space still holds the region: the call acts
    /// as if made before the removal. It sets the flags the undo gives the slot back; turned
    /// off, or on from off, logging starts clean (no guest writes the region while KVM has no
    /// slot there), and turned on while on, the pages the removal owes stay owed, as above.
    /// [`registered`](Self::registered) and [`slot_at`](Self::slot_at) meanwhile list what KVM
    /// has, so not the region. The same holds for a region out of sync (KVM refused to take
    /// its slot back after a listener after this one refused its removal, see
    /// [`out_of_sync`](Self::out_of_sync)), until KVM takes it back or the space removes it:
    /// the flags set are the ones KVM gets when it takes the slot back.
    ///
    /// A slot KVM keeps after refusing to delete it when undoing a refused insertion is no
    /// region of the space: this call leaves it as it is ([`Error::NotRegistered`]).
    ///
    /// # Errors
    /// [`Error::NotRegistered`] if no region of the space starts at `base` that is registered
    /// with KVM, being removed or out of sync (as above);
    /// [`Error::SetMemoryRegion`] if KVM refuses (the slot keeps its flags).
    pub fn set_dirty_logging(&self, base: GuestAddress, on: bool) -> Result<()> {
        let shared = self.shared();
        let mut state = shared.locked();
        let Some((slot, _, flags)) = Shared::slot_of(&state, base.0) else {
            // A removal under way, or a region out of sync: the undo, if it comes (KVM taking
            // the slot back), gives the slot these flags, and turning logging off, or on from
            // off, starts clean (no guest writes it meanwhile).
            let gap = self
                .unslotted(&mut state, base.0)
                .ok_or(Error::NotRegistered { base: base.0 })?;
            if on {
                // On while on: what the removal owes stays owed (see below). From off,
                // nothing is owed.
                *gap.flags |= KVM_MEM_LOG_DIRTY_PAGES;
            } else {
                *gap.flags &= !KVM_MEM_LOG_DIRTY_PAGES;
                *gap.owed = false;
            }
            return Ok(());
        };
        if on && flags & KVM_MEM_LOG_DIRTY_PAGES != 0 {
            // On already: nothing changes, as KVM changes nothing for flags that do not
            // change. Its log, and every page an undone removal owes, stay for the next
            // fetch: dropping them would lose pages the guest wrote since the last one.
            return Ok(());
        }
        let flags = if on {
            flags | KVM_MEM_LOG_DIRTY_PAGES
        } else {
            flags & !KVM_MEM_LOG_DIRTY_PAGES
        };
        shared.set_flags(&mut state, slot, flags)
    }

    /// Fetches and clears KVM's dirty log of the region starting at `bitmap`'s
    /// [`base`](DirtyBitmap::base) (one `KVM_GET_DIRTY_LOG`, which write-protects the pages
    /// again) and merges it into `bitmap` (bits of KVM's reply past the region's last page,
    /// which KVM leaves clear, are dropped).
    ///
    /// This is the merge point with the VMM's own record of its writes: pass the bitmap those
    /// writes were [`mark`](DirtyBitmap::mark)ed in, and it comes back holding every page
    /// written by the guest or the VMM since the last fetch. After a removal of the region
    /// that a region listener after this one refused (the slot left KVM and came back, and
    /// KVM dropped its log meanwhile), the next fetch gives every page of the region: a
    /// vCPU may have written any of them right up to the deletion. (Not when a fetch while the
    /// removal was under way gave them already, nor once logging was turned off since:
    /// turned off, the log is dropped, as KVM drops its own with the flag.)
    ///
    /// That holds in KVM's default mode. If the VMM turned on
    /// `KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2` for the VM (before or after attaching: KVM offers
    /// no way to ask), `KVM_GET_DIRTY_LOG` neither clears the log nor write-protects the
    /// pages again: no written page is lost, but every fetch also gives the pages of the
    /// fetches before, until the VMM clears them with `KVM_CLEAR_DIRTY_LOG` (and with
    /// `KVM_DIRTY_LOG_INITIALLY_SET`, logging starts with every page dirty). With KVM's dirty
    /// ring on, KVM gives no log: [`Error::DirtyLog`].
    ///
    /// While a removal of the region is under way (see
    /// [`set_dirty_logging`](Self::set_dirty_logging)), KVM has no slot and no log for it. A
    /// fetch then answers by the logging the undo would give the slot back (the slot's at its
    /// deletion, or as `set_dirty_logging` set it since): while it is off,
    /// [`Error::DirtyLog`] (`ENOENT`, as KVM answers for a slot that does not log); while it
    /// is on, every page if the slot logged at its deletion and logging was not turned off
    /// since (once: the undo, if it comes, then owes nothing), else nothing. That answer
    /// misses no write: from the deletion on, a vCPU write there exits to the VMM as MMIO and
    /// reaches no memory of the region, and KVM's own writes to guest memory go through its
    /// slots too, so the region's pages change meanwhile only by the VMM's own writes, which
    /// KVM's log never holds. With manual protection, where KVM would give a page again at
    /// every fetch until the VMM clears it, the pages owed are still given once: none is lost,
    /// and the slot taken back logs afresh.
    ///
    /// A region out of sync (KVM refused to take its slot back after a listener after this one
    /// refused its removal, see [`out_of_sync`](Self::out_of_sync)) is answered the same way,
    /// for as long as it is out of sync: the pages its removal owes (every page, once, unless
    /// a fetch gave them or logging was turned off since), and nothing after them. What is
    /// still owed when KVM takes the slot back is given by the first fetch after that. A
    /// migration is therefore never told a page is clean that the guest wrote since the fetch
    /// before; what the VMM writes there meanwhile (through the address space: a device
    /// model's DMA, or the VMM completing a vCPU's MMIO exit at the region by writing it) is
    /// the VMM's to mark in `bitmap`, as for any region. A slot KVM keeps after refusing to delete
    /// it when undoing a refused insertion is no region of the space, and gives no log
    /// ([`Error::NotRegistered`]).
    ///
    /// # Errors
    /// [`Error::NotRegistered`] if no region of the space starts there that is registered with
    /// KVM, being removed or out of sync; [`Error::BitmapMismatch`] if `bitmap` is not of that
    /// region and the host page size; [`Error::DirtyLog`] if KVM refuses (dirty logging off),
    /// if the slot KVM holds under the region's number is larger than the region (the VMM's own
    /// code replaced it: `EFAULT`, and KVM wrote nothing past the log's memory), or if there is
    /// no memory for the log (`ENOMEM`). `bitmap` is unchanged after an error.
    pub fn fetch_dirty_log_into(&self, bitmap: &mut DirtyBitmap) -> Result<()> {
        let shared = self.shared();
        let mut state = shared.locked();
        self.fetch_locked(&mut state, bitmap)
    }

    /// Fetches and clears KVM's dirty log of the region starting at `base` as a new bitmap of
    /// that region, one bit per host page (not cleared where the VMM turned on manual
    /// dirty-log protection: see [`fetch_dirty_log_into`](Self::fetch_dirty_log_into)).
    ///
    /// # Errors
    /// [`Error::NotRegistered`] and [`Error::DirtyLog`] as for
    /// [`fetch_dirty_log_into`](Self::fetch_dirty_log_into) (dirty logging off, for example);
    /// [`Error::InvalidBitmap`] if the bitmap cannot be allocated. The region is looked up and
    /// its log fetched in one step, so a region replaced at `base` meanwhile by another thread
    /// gives the new region's log, never a mismatch.
    pub fn fetch_dirty_log(&self, base: GuestAddress) -> Result<DirtyBitmap> {
        let shared = self.shared();
        let mut state = shared.locked();
        let size = match Shared::slot_of(&state, base.0) {
            Some((_, region, _)) => region.size(),
            None => self
                .unslotted(&mut state, base.0)
                .ok_or(Error::NotRegistered { base: base.0 })?
                .region
                .size(),
        };
        let mut bitmap = DirtyBitmap::new(base, size, host_page_size())?;
        self.fetch_locked(&mut state, &mut bitmap)?;
        Ok(bitmap)
    }

    /// [`fetch_dirty_log_into`](Self::fetch_dirty_log_into) with the state locked.
    fn fetch_locked(&self, state: &mut State, bitmap: &mut DirtyBitmap) -> Result<()> {
        let shared = self.shared();
        let base = bitmap.base.0;
        let page = host_page_size();
        let mismatch = |region: &memvisor_space::Region| {
            (region.size() != bitmap.size || bitmap.page_size != page).then(|| {
                Error::BitmapMismatch {
                    base,
                    size: bitmap.size,
                    page_size: bitmap.page_size,
                    other_base: region.base().0,
                    other_size: region.size(),
                    other_page_size: page,
                }
            })
        };
        let Some((slot, region, _)) = Shared::slot_of(state, base) else {
            // A removal under way, or a region out of sync: KVM dropped the log with the
            // slot, and no guest writes the region meanwhile, so the log since the last fetch
            // is every page if the slot logged at its deletion (owed once), else nothing.
            let gap = self
                .unslotted(state, base)
                .ok_or(Error::NotRegistered { base })?;
            if let Some(e) = mismatch(&gap.region) {
                return Err(e);
            }
            if *gap.flags & KVM_MEM_LOG_DIRTY_PAGES == 0 {
                // What KVM answers for a slot that does not log.
                return Err(Error::DirtyLog {
                    slot: gap.slot,
                    base,
                    source: crate::KvmError::new(libc::ENOENT),
                });
            }
            if std::mem::take(gap.owed) {
                bitmap.mark(bitmap.base, bitmap.size);
            }
            return Ok(());
        };
        if let Some(e) = mismatch(region) {
            return Err(e);
        }
        get_log(shared, slot, region, |words| bitmap.or_words(words))?;
        if state.take_all_dirty(slot) {
            bitmap.mark(bitmap.base, bitmap.size);
        }
        Ok(())
    }
}

/// The host page size: the unit of KVM's dirty log.
fn host_page_size() -> u64 {
    memvisor_vmem::page_size() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_dirty_log_request_is_the_kernels() {
        // `_IOW(0xAE, 0x42, struct kvm_dirty_log)` as Linux defines it on x86-64, Arm64 and
        // RISC-V (`asm-generic/ioctl.h`), for its 16-byte argument.
        assert_eq!(std::mem::size_of::<kvm_dirty_log>(), 16);
        assert_eq!(KVM_GET_DIRTY_LOG, 0x4010_ae42);
    }

    #[test]
    fn mark_span_sets_each_page_once() {
        let p = host_page_size();
        let mut b = DirtyBitmap::new(GuestAddress(p), 130 * p, p).unwrap();
        b.mark(GuestAddress(2 * p - 1), 2);
        b.mark(GuestAddress(p + 128 * p), p);
        assert_eq!(b.count(), 3);
        assert_eq!(
            b.dirty_pages().collect::<Vec<_>>(),
            [
                GuestAddress(p),
                GuestAddress(2 * p),
                GuestAddress(p + 128 * p)
            ]
        );
    }

    #[test]
    fn or_words_drops_bits_past_the_last_page() {
        // A log of 65 pages ending at the top of the address space, as KVM's reply to
        // `KVM_GET_DIRTY_LOG` comes in: whole words, of which only the pages' bits count.
        let page = host_page_size();
        let base = GuestAddress(u64::MAX - 65 * page + 1);
        let mut b = DirtyBitmap::new(base, 65 * page, page).unwrap();
        b.or_words(&[1, u64::MAX, u64::MAX]);
        assert_eq!(b.words(), [1, 1]);
        assert_eq!(b.count(), 2);
        let last = GuestAddress(base.0 + 64 * page);
        assert_eq!(b.dirty_pages().collect::<Vec<_>>(), [base, last]);
        assert!(b.count() <= b.pages());
    }

    #[test]
    fn mark_outside_region_ignored() {
        let p = host_page_size();
        let mut b = DirtyBitmap::new(GuestAddress(p), 2 * p, p).unwrap();
        b.mark(GuestAddress(0), p);
        b.mark(GuestAddress(3 * p), p);
        b.mark(GuestAddress(u64::MAX), u64::MAX);
        b.mark(GuestAddress(p), 0);
        assert_eq!(b.count(), 0);
        assert!(!b.is_dirty(GuestAddress(3 * p)));
        assert!(!b.is_dirty(GuestAddress(0)));
    }

    #[test]
    fn merge_same_region_ors_bits() {
        let p = host_page_size();
        let mut a = DirtyBitmap::new(GuestAddress(0), 64 * p, p).unwrap();
        let mut b = a.clone();
        a.mark(GuestAddress(0), 1);
        b.mark(GuestAddress(63 * p), 1);
        a.merge(&b).unwrap();
        assert_eq!(a.count(), 2);
        assert!(a.is_dirty(GuestAddress(63 * p)));
        a.clear();
        assert_eq!(a.count(), 0);
    }

    #[test]
    fn merge_other_region_errors_and_keeps_bits() {
        let p = host_page_size();
        let mut a = DirtyBitmap::new(GuestAddress(0), 64 * p, p).unwrap();
        a.mark(GuestAddress(0), 1);
        let mut b = DirtyBitmap::new(GuestAddress(p), 64 * p, p).unwrap();
        b.mark(GuestAddress(2 * p), 1);
        let err = a.merge(&b).unwrap_err();
        assert!(matches!(err, Error::BitmapMismatch { .. }), "{err}");
        assert_eq!(a.dirty_pages().collect::<Vec<_>>(), [GuestAddress(0)]);
    }

    #[test]
    fn new_bad_shape_errors() {
        let host = host_page_size();
        for (base, size, page) in [
            (0, host, 0),
            (0, 0, host),
            (u64::MAX, 2, host),
            (0, u64::MAX, host),
            (0, (1 << 57) + 1, host),
        ] {
            let err = DirtyBitmap::new(GuestAddress(base), size, page).unwrap_err();
            assert!(matches!(err, Error::InvalidBitmap { .. }), "{err}");
        }
    }

    #[test]
    fn new_page_size_below_host_page_or_not_power_of_two_errors() {
        let host = host_page_size();
        for page in [
            1,
            2,
            3,
            512,
            host / 2,
            host - 1,
            host + 1,
            3 * host,
            (1 << 63) + host,
        ] {
            let err = DirtyBitmap::new(GuestAddress(0), 1 << 20, page).unwrap_err();
            assert!(
                matches!(err, Error::InvalidBitmap { base: 0, size: 0x10_0000, page_size } if page_size == page),
                "{page:#x}: {err}"
            );
        }
        // A byte per bit over the largest range would be 16 PiB: refused before allocating.
        assert!(matches!(
            DirtyBitmap::new(GuestAddress(0), 1 << 57, 1),
            Err(Error::InvalidBitmap { .. })
        ));
        for page in [host, 2 * host, 2 << 20, 1 << 63] {
            let b = DirtyBitmap::new(GuestAddress(0), 1 << 22, page).unwrap();
            assert_eq!(b.pages(), (1u64 << 22).div_ceil(page));
        }
    }

    /// This process's resident memory in bytes.
    fn resident() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * host_page_size()
    }

    #[test]
    // Miri would have to make the 2 GiB of bits it allocates.
    #[cfg_attr(miri, ignore)]
    fn new_large_bitmap_takes_no_memory_until_marked() {
        // 64 TiB in 4 KiB pages: 2 GiB of bits, none set.
        let before = resident();
        let mut b = DirtyBitmap::new(GuestAddress(0), 1 << 46, host_page_size()).unwrap();
        let grown = resident().saturating_sub(before);
        assert!(
            grown < 256 << 20,
            "a clean bitmap made {grown:#x} bytes resident"
        );
        assert_eq!(b.words().len(), 1 << 28);
        assert!(!b.is_dirty(GuestAddress(0)));
        b.mark(GuestAddress((1 << 46) - 1), 1);
        assert!(b.is_dirty(GuestAddress((1 << 46) - 1)));
        assert!(!b.is_dirty(GuestAddress((1 << 46) - 1 - host_page_size())));
    }

    #[test]
    fn mark_region_at_top_of_address_space() {
        let p = host_page_size();
        let base = u64::MAX - (2 * p - 1);
        let mut b = DirtyBitmap::new(GuestAddress(base), 2 * p, p).unwrap();
        b.mark(GuestAddress(u64::MAX), u64::MAX);
        assert_eq!(
            b.dirty_pages().collect::<Vec<_>>(),
            [GuestAddress(base + p)]
        );
        assert!(b.is_dirty(GuestAddress(u64::MAX)));
    }

    #[test]
    // Safe arithmetic over some 1,400 spans: minutes under Miri, which has nothing to check.
    #[cfg_attr(miri, ignore)]
    fn mark_matches_a_page_by_page_model() {
        // Spans starting and ending at every position of a word, across zero to three word
        // boundaries, inside and over the edges of a region of 200 pages (the last partial).
        let page = host_page_size();
        let base = 0x10_0000;
        let size = 199 * page + 10;
        for start in (0..205).map(|p| base + p * page - page / 2) {
            for len in [
                1,
                page,
                63 * page + 1,
                64 * page,
                65 * page,
                130 * page,
                300 * page,
            ] {
                let mut b = DirtyBitmap::new(GuestAddress(base), size, page).unwrap();
                b.mark(GuestAddress(start), len);
                let expected: Vec<GuestAddress> = (0..b.pages())
                    .map(|p| base + p * page)
                    // The page, the span and the region share a byte.
                    .filter(|&p| p.max(start) < (p + page).min(start + len).min(base + size))
                    .map(GuestAddress)
                    .collect();
                assert_eq!(
                    b.dirty_pages().collect::<Vec<_>>(),
                    expected,
                    "{start:#x}+{len:#x}"
                );
            }
        }
    }

    #[test]
    fn new_takes_a_word_per_64_pages_at_most_a_32768th_of_the_range_plus_a_word() {
        let host = host_page_size();
        for size in [
            1,
            host - 1,
            host,
            64 * host - 1,
            64 * host,
            64 * host + 1,
            65 * host,
            1000 * host + 17,
            1 << 30,
        ] {
            let b = DirtyBitmap::new(GuestAddress(0), size, host).unwrap();
            let words = size.div_ceil(host).div_ceil(64);
            assert_eq!(b.words().len() as u64, words, "{size:#x}");
            assert_eq!(b.pages(), size.div_ceil(host), "{size:#x}");
            // 8 bytes a word: at most size / (8 * host) + 8 bytes (1/32768 with 4 KiB pages).
            assert!(8 * words <= size / (8 * host) + 8, "{size:#x}");
        }
    }

    #[test]
    fn new_bound_holds_for_ranges_ending_at_the_top_and_empty_ranges() {
        let host = host_page_size();
        // Empty ranges are refused, wherever they start.
        for base in [0, 1, host, u64::MAX - host + 1, u64::MAX] {
            let err = DirtyBitmap::new(GuestAddress(base), 0, host).unwrap_err();
            assert!(
                matches!(err, Error::InvalidBitmap { size: 0, .. }),
                "{base:#x}: {err}"
            );
        }
        // Ranges ending at `u64::MAX`, of whole and partial pages, unaligned bases included.
        for page in [host, 2 * host, 2 << 20, 1 << 63] {
            for size in [
                1,
                host - 1,
                host,
                64 * host + 1,
                1000 * host + 17,
                1 << 24,
                (1 << 24) + 1,
            ] {
                let base = u64::MAX - (size - 1);
                let mut b = DirtyBitmap::new(GuestAddress(base), size, page).unwrap();
                let words = size.div_ceil(page).div_ceil(64);
                assert_eq!(b.words().len() as u64, words, "{size:#x}/{page:#x}");
                assert!(8 * words <= size / (8 * host) + 8, "{size:#x}/{page:#x}");
                // The last byte's page is the last page, and its address does not wrap.
                b.mark(GuestAddress(u64::MAX), 1);
                let last = base + (b.pages() - 1) * page;
                assert_eq!(b.dirty_pages().collect::<Vec<_>>(), [GuestAddress(last)]);
                assert!(b.is_dirty(GuestAddress(u64::MAX)));
                b.mark(GuestAddress(0), u64::MAX);
                assert_eq!(b.count(), b.pages(), "{size:#x}/{page:#x}");
                assert_eq!(b.dirty_pages().next(), Some(GuestAddress(base)));
            }
        }
        // The largest range, ending at the top, is accepted or refused for memory, never
        // more than its 32768th: with the largest page, one word.
        let b =
            DirtyBitmap::new(GuestAddress(u64::MAX - (MAX_SIZE - 1)), MAX_SIZE, 1 << 63).unwrap();
        assert_eq!(b.words().len(), 1);
        // One byte more is refused, as is a range one byte past the top.
        for (base, size) in [
            (u64::MAX - MAX_SIZE, MAX_SIZE + 1),
            (u64::MAX - (host - 2), host),
        ] {
            let err = DirtyBitmap::new(GuestAddress(base), size, host).unwrap_err();
            assert!(matches!(err, Error::InvalidBitmap { .. }), "{err}");
        }
    }

    #[test]
    fn log_buffer_places_logs_against_its_end_and_fits_down_only() {
        let page = memvisor_vmem::page_size();
        // The start of a log of `bytes` in `buffer`, checked to end where its accessible pages
        // end, its words writable and readable.
        let placed = |buffer: &mut LogBuffer, bytes: usize| {
            let start = buffer.place(bytes).unwrap();
            let (reservation, accessible) = buffer.0.as_ref().unwrap();
            assert_eq!(
                start.addr() + bytes,
                reservation.as_ptr().addr() + accessible,
                "{bytes}"
            );
            assert_eq!(start.addr() % 8, 0);
            // SAFETY: `place` gave `bytes` (a multiple of 8) of committed read-write memory,
            // aligned, that nothing else refers to.
            let words = unsafe { std::slice::from_raw_parts_mut(start, bytes / 8) };
            words.fill(u64::MAX);
            assert!(words.iter().all(|&w| w == u64::MAX));
        };
        let mut buffer = LogBuffer::default();
        // Nothing held: nothing to fit.
        buffer.fit(8);
        assert_eq!(buffer.held(), 0);
        placed(&mut buffer, 8);
        assert_eq!(buffer.held(), page);
        placed(&mut buffer, 3 * page + 8);
        assert_eq!(buffer.held(), 4 * page);
        // A smaller log is placed in the same memory.
        placed(&mut buffer, 16);
        assert_eq!(buffer.held(), 4 * page);
        // Fitting to a larger log, or to one of the same pages, keeps it.
        buffer.fit(16 * page);
        assert_eq!(buffer.held(), 4 * page);
        buffer.fit(3 * page + 16);
        assert_eq!(buffer.held(), 4 * page);
        // So does fitting to a log of half its pages or more (a region plugged and unplugged
        // in turn does not make it reserve anew each time).
        buffer.fit(page + 8);
        assert_eq!(buffer.held(), 4 * page);
        buffer.fit(2 * page);
        assert_eq!(buffer.held(), 4 * page);
        // Fitting to fewer pages than that gives the rest back; a larger log grows it again.
        buffer.fit(page);
        assert_eq!(buffer.held(), page);
        placed(&mut buffer, page);
        assert_eq!(buffer.held(), page);
        placed(&mut buffer, 2 * page + 8);
        assert_eq!(buffer.held(), 3 * page);
        buffer.fit(page + 8);
        assert_eq!(buffer.held(), 3 * page);
        buffer.fit(8);
        assert_eq!(buffer.held(), page);
        placed(&mut buffer, 2 * page + 8);
        // A log whose pages overflow is refused, and the buffer kept.
        assert!(buffer.place(usize::MAX - 7).is_none());
        assert_eq!(buffer.held(), 3 * page);
        buffer.fit(usize::MAX - 7);
        assert_eq!(buffer.held(), 3 * page);
        // No log: nothing held.
        buffer.fit(0);
        assert_eq!(buffer.held(), 0);
        assert!(buffer.0.is_none());
    }

    #[test]
    fn log_buffer_stays_within_twice_the_largest_registered_log_for_any_sequence() {
        // Logs of regions registered, fetched and removed in a seeded random order, as the
        // slots use the buffer: a fetch places the log of a registered region, a removal fits
        // the buffer to the largest log left. After every step the buffer holds at most twice
        // the pages of the largest log registered (nothing when none is), and every log placed
        // ends where its accessible pages end.
        let page = memvisor_vmem::page_size();
        let pages = |bytes: usize| bytes.next_multiple_of(page);
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |n: usize| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            usize::try_from(seed >> 33).unwrap() % n
        };
        let mut buffer = LogBuffer::default();
        let mut registered: Vec<usize> = Vec::new();
        let steps = if cfg!(miri) { 200 } else { 5000 };
        for step in 0..steps {
            match next(3) {
                0 if registered.len() < 6 => registered.push(8 * (1 + next(5 * page / 8))),
                1 if !registered.is_empty() => {
                    let bytes = registered[next(registered.len())];
                    let start = buffer.place(bytes).unwrap();
                    let (reservation, accessible) = buffer.0.as_ref().unwrap();
                    assert_eq!(
                        start.addr() + bytes,
                        reservation.as_ptr().addr() + accessible,
                        "step {step}"
                    );
                }
                _ if !registered.is_empty() => {
                    registered.swap_remove(next(registered.len()));
                    buffer.fit(registered.iter().copied().max().unwrap_or(0));
                }
                _ => {}
            }
            let largest = registered.iter().copied().max().unwrap_or(0);
            assert!(
                buffer.held() <= 2 * pages(largest),
                "step {step}: {} held for {registered:?}",
                buffer.held()
            );
        }
    }

    #[test]
    fn new_partial_last_page_counts() {
        let p = host_page_size();
        let b = DirtyBitmap::new(GuestAddress(0), 65 * p + 1, p).unwrap();
        assert_eq!(b.pages(), 66);
        assert_eq!(b.words().len(), 2);
    }
}

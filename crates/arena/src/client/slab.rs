//! Slabs: the small-block front. Each size class has slabs, buddy blocks cut into blocks of the
//! class. A slab of at most [`BITMAP_CAP`] blocks keeps a bitmap of the blocks not handed out in
//! its record, so giving a block back writes only the record and taking one is a bit scan; a
//! larger slab (the classes below 128 bytes) keeps a free list threaded through freed blocks and
//! hands out never-used blocks by a bump offset. A slab's record lives in the arena's slab
//! table, outside the slab, so a free reads a compact, hot table instead of a header at the
//! slab's start.

use super::cache::Uncached;
use super::{SLAB, State, meta};
use crate::arena::Arena;
use crate::classes::{CLASS_SLOTS, MAX_SLAB, class_reciprocal, class_size};
use crate::error::Result;

/// The end of a slab list (a slab-table index).
pub(crate) const NO_SLAB: u32 = u32::MAX;
/// The end of a slab's free list (an offset in the slab).
const NO_BLOCK: u16 = u16::MAX;

/// The most blocks a slab may have to keep them in a bitmap in its record.
const BITMAP_CAP: u16 = 64;

/// The bitmap of a slab of `cap` (1 to [`BITMAP_CAP`]) blocks none of which is handed out.
#[inline]
fn all_free(cap: u16) -> u64 {
    debug_assert!((1..=BITMAP_CAP).contains(&cap));
    u64::MAX >> (64 - u32::from(cap))
}

/// A free slab block's link in a slab of more than [`BITMAP_CAP`] blocks, kept in its first
/// bytes: the offset in its slab of the next free block, or [`NO_BLOCK`].
#[repr(C)]
pub(super) struct FreeObj {
    pub(super) next: u16,
}

/// The record of one slab, in the arena's slab table at the index of the slab's first
/// [`slab unit`](crate::arena::Geometry::slab_unit_shift). Only the slab's holder touches it.
#[derive(Clone, Copy)]
#[repr(C)]
pub(crate) struct Slab {
    /// The next slab of the holder's partial list of the class ([`NO_SLAB`] at the end).
    next: u32,
    /// The previous slab of that list; stale (not read) while the slab heads the list, so
    /// taking the head off does not write to the next slab.
    prev: u32,
    /// Which blocks are handed out; the class's capacity says which form.
    blocks: SlabBlocks,
}

/// The blocks of a slab as its record keeps them: the form is the class's, fixed by the
/// capacity of its slabs (at most [`BITMAP_CAP`] blocks: `bits`; more: `list`). Both forms
/// are eight initialised bytes, so either may be read as `bits`.
#[derive(Clone, Copy)]
#[repr(C)]
union SlabBlocks {
    /// Bit `i` set while block `i` is not handed out (never used or given back).
    bits: u64,
    /// A free list through the freed blocks and a bump offset.
    list: SlabList,
}

/// The blocks of a slab of more than [`BITMAP_CAP`] blocks.
#[derive(Clone, Copy)]
#[repr(C)]
struct SlabList {
    /// Offset in the slab of the first free block, or [`NO_BLOCK`].
    free: u16,
    /// Offset in the slab of the first block never handed out.
    bump: u16,
    /// Blocks handed out and not given back (cached blocks count).
    live: u16,
    /// Always 0, so that the record has no uninitialised byte.
    zero: u16,
}

impl core::fmt::Debug for Slab {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // SAFETY: both forms are eight initialised bytes; `bits` reads either.
        let bits = unsafe { self.blocks.bits };
        f.debug_struct("Slab")
            .field("next", &self.next)
            .field("prev", &self.prev)
            .field("blocks", &format_args!("{bits:#018x}"))
            .finish()
    }
}

const _: () = assert!(core::mem::size_of::<Slab>() == 16);

/// The figures of a size class that giving a block back to its slab needs
/// ([`State::slab_class`]).
#[derive(Clone, Copy)]
pub(super) struct SlabClass {
    class: usize,
    /// The class's block size.
    size: usize,
    /// [`class_reciprocal`] of the class: a block's offset in its slab times it, shifted right
    /// by 32, is the block's index.
    reciprocal: u32,
    /// Log2 of the class's slab size.
    shift: u32,
    /// Log2 of a slab unit (the slab table has a record per unit).
    unit_shift: u32,
    /// Blocks in a slab of the class.
    cap: u16,
    /// The slab table.
    slabs: *mut Slab,
    /// The arena's first byte (offsets count from it).
    base: *mut u8,
}

/// An offset in a slab as its record keeps it: a slab is at most [`MAX_SLAB`] bytes, so it
/// fits a `u16`.
#[inline]
#[allow(
    clippy::cast_possible_truncation,
    reason = "slabs are at most `MAX_SLAB` (16 KiB) bytes"
)]
fn slab_offset(off: usize) -> u16 {
    const _: () = assert!(MAX_SLAB <= NO_BLOCK as usize);
    debug_assert!(off < MAX_SLAB);
    off as u16
}

impl State {
    /// The record of slab-table entry `index`, or null for [`NO_SLAB`].
    #[inline]
    pub(super) fn slab_ptr(&self, index: u32) -> *mut Slab {
        if index == NO_SLAB {
            core::ptr::null_mut()
        } else {
            self.slabs.wrapping_add(index as usize)
        }
    }

    /// The slab-table index of the record `slab`.
    #[inline]
    #[allow(
        clippy::cast_possible_truncation,
        reason = "`Arena::new` uses fewer than `u32::MAX` slab units"
    )]
    fn slab_index(&self, slab: *mut Slab) -> u32 {
        (slab.addr().wrapping_sub(self.slabs.addr()) / core::mem::size_of::<Slab>()) as u32
    }

    /// The offset of the slab whose record is `slab`.
    #[inline]
    pub(super) fn slab_start(&self, slab: *mut Slab) -> usize {
        (self.slab_index(slab) as usize) << self.geo.slab_unit_shift
    }

    /// The record of the slab of `class` that the block at `off` lies in, and the slab's
    /// offset.
    #[inline]
    pub(super) fn slab_of(&self, off: usize, class: usize) -> (*mut Slab, usize) {
        let shift = self.geo.slab_shift[class & (CLASS_SLOTS - 1)];
        let start = (off >> shift) << shift;
        (
            self.slabs.wrapping_add(start >> self.geo.slab_unit_shift),
            start,
        )
    }

    /// Blocks in a slab of `class`.
    #[inline]
    fn slab_cap(&self, class: usize) -> u16 {
        self.geo.slab_cap[class & (CLASS_SLOTS - 1)]
    }

    /// Blocks of the slab `slab` of `class` handed out and not given back (cached blocks
    /// count).
    ///
    /// # Safety
    /// `slab` is the record of a live slab of `class` of this client.
    #[inline]
    pub(super) unsafe fn slab_live(&self, slab: *mut Slab, class: usize) -> usize {
        let cap = self.slab_cap(class);
        // SAFETY: the caller's promise; the class's capacity says which form the record has.
        unsafe {
            if cap <= BITMAP_CAP {
                usize::from(cap) - (*slab).blocks.bits.count_ones() as usize
            } else {
                usize::from((*slab).blocks.list.live)
            }
        }
    }

    #[inline]
    pub(super) fn alloc_small(&mut self, arena: &Arena, id: u32, class: usize) -> Result<usize> {
        let mut slab = self.partial[class];
        if slab.is_null() {
            slab = self.new_slab(arena, id, class)?;
        }
        let size = class_size(class);
        let start = self.slab_start(slab);
        let cap = self.slab_cap(class);
        // SAFETY: `slab` heads this client's partial list of `class`, so it is the record of a
        // live slab in a chunk this client holds, its form the class's, and the slab has a
        // free or never-used block.
        unsafe {
            let (obj, full) = if cap <= BITMAP_CAP {
                let bits = (*slab).blocks.bits;
                debug_assert!(bits != 0, "a slab on the partial list has room");
                if bits == all_free(cap) {
                    self.empty_slabs[class] -= 1;
                }
                let rest = bits & bits.wrapping_sub(1);
                (*slab).blocks.bits = rest;
                (start + bits.trailing_zeros() as usize * size, rest == 0)
            } else {
                let list = &mut (*slab).blocks.list;
                if list.live == 0 {
                    self.empty_slabs[class] -= 1;
                }
                let obj = if list.free == NO_BLOCK {
                    let obj = start + usize::from(list.bump);
                    list.bump += slab_offset(size);
                    obj
                } else {
                    let obj = start + usize::from(list.free);
                    list.free = (*self.at(obj).cast::<FreeObj>()).next;
                    obj
                };
                list.live += 1;
                (obj, list.live == cap)
            };
            if full {
                // `next` heads the list now; its `prev` is not read there.
                self.partial[class] = self.slab_ptr((*slab).next);
                (*slab).next = NO_SLAB;
            }
            Ok(obj)
        }
    }

    #[cold]
    pub(super) fn new_slab(&mut self, arena: &Arena, id: u32, class: usize) -> Result<*mut Slab> {
        let order = self.geo.slab_order[class];
        let pages = 1usize << order;
        let bytes = pages << self.geo.page_shift;
        let off = match self.uncache_large(pages, order) {
            Uncached::Hit(off) => off,
            Uncached::Miss => self.alloc_pages(arena, id, pages, 0, bytes)?,
            Uncached::Stuck(stuck) => {
                let off = self.alloc_pages(arena, id, pages, 0, bytes)?;
                self.evict_large(arena, order, stuck);
                off
            }
        };
        self.set_slab_pages(off, bytes, meta(SLAB, class));
        let slab = self.slabs.wrapping_add(off >> self.geo.slab_unit_shift);
        let head = self.partial[class];
        let head_index = if head.is_null() {
            NO_SLAB
        } else {
            self.slab_index(head)
        };
        let cap = self.slab_cap(class);
        let blocks = if cap <= BITMAP_CAP {
            SlabBlocks {
                bits: all_free(cap),
            }
        } else {
            SlabBlocks {
                list: SlabList {
                    free: NO_BLOCK,
                    bump: 0,
                    live: 0,
                    zero: 0,
                },
            }
        };
        // SAFETY: the slab's block was just handed out in a chunk this client holds, so its
        // record (at its first unit: slabs are aligned to their size, at least a unit) is this
        // client's to write; `head`, if not null, is the record of a live slab of this client.
        unsafe {
            slab.write(Slab {
                next: head_index,
                prev: NO_SLAB,
                blocks,
            });
            if !head.is_null() {
                (*head).prev = self.slab_index(slab);
            }
        }
        self.partial[class] = slab;
        self.empty_slabs[class] += 1;
        Ok(slab)
    }

    /// Gives the block at `off` back to its slab of `class`. A slab left empty goes back to
    /// the buddy allocator if another of its class is empty already, or with `reclaim`.
    #[inline]
    pub(super) fn free_small(&mut self, arena: &Arena, off: usize, class: usize, reclaim: bool) {
        let at = self.slab_class(class);
        // SAFETY: `off` is a block of this client in a slab of `class` (its page says so) that
        // is being freed, so no one uses it any more; `at` was just read for `class`.
        unsafe { self.free_small_at(arena, at, off, reclaim) };
    }

    /// What giving back blocks of `class` to their slabs needs, read once for many blocks.
    #[inline]
    pub(super) fn slab_class(&self, class: usize) -> SlabClass {
        let slot = class & (CLASS_SLOTS - 1);
        SlabClass {
            class,
            size: class_size(class),
            reciprocal: class_reciprocal(class),
            shift: self.geo.slab_shift[slot],
            unit_shift: self.geo.slab_unit_shift,
            cap: self.geo.slab_cap[slot],
            slabs: self.slabs,
            base: self.geo.base.as_ptr(),
        }
    }

    /// [`free_small`](Self::free_small) with the class's figures `at` (from
    /// [`slab_class`](Self::slab_class)) already read: a block being given back to its slab
    /// reads nothing else of the client unless its slab leaves or joins the partial list.
    ///
    /// # Safety
    /// `off` is a block of this client in a slab of `at.class` (its page says so) that is
    /// being freed (no one uses it any more), and `at` is `slab_class(at.class)`.
    #[inline(always)]
    pub(super) unsafe fn free_small_at(
        &mut self,
        arena: &Arena,
        at: SlabClass,
        off: usize,
        reclaim: bool,
    ) {
        let start = (off >> at.shift) << at.shift;
        let slab = at.slabs.wrapping_add(start >> at.unit_shift);
        // SAFETY: the caller's promise: `slab` is the record of the block's slab (of the
        // class's form) and the block one no one uses any more.
        unsafe {
            if at.cap <= BITMAP_CAP {
                // The block starts a multiple of the class size into its slab, which is at
                // most `MAX_SLAB` bytes: the reciprocal gives its index exactly.
                let index = (((off - start) as u64) * u64::from(at.reciprocal)) >> 32;
                debug_assert_eq!(index as usize * at.size, off - start);
                let bits = (*slab).blocks.bits;
                debug_assert!(bits & (1 << index) == 0, "a block handed out");
                if bits == 0 {
                    self.relist_slab(slab, at.class);
                }
                let bits = bits | 1 << index;
                (*slab).blocks.bits = bits;
                if bits == all_free(at.cap) {
                    self.slab_emptied(arena, slab, at.class, reclaim);
                }
            } else {
                let list = &mut (*slab).blocks.list;
                if list.live == at.cap {
                    self.relist_slab(slab, at.class);
                }
                at.base
                    .wrapping_add(off)
                    .cast::<FreeObj>()
                    .write(FreeObj { next: list.free });
                list.free = slab_offset(off - start);
                list.live -= 1;
                if list.live == 0 {
                    self.slab_emptied(arena, slab, at.class, reclaim);
                }
            }
        }
    }

    /// Puts the full slab `slab` of `class`, which a block is being given back to, at the head
    /// of the partial list.
    ///
    /// # Safety
    /// `slab` is the record of a full slab of `class` of this client (so on no list).
    #[inline]
    unsafe fn relist_slab(&mut self, slab: *mut Slab, class: usize) {
        let head = self.partial[class];
        // SAFETY: the caller's promise; `head`, if not null, is the record of a live slab of
        // this client.
        unsafe {
            (*slab).prev = NO_SLAB;
            if head.is_null() {
                (*slab).next = NO_SLAB;
            } else {
                (*slab).next = self.slab_index(head);
                (*head).prev = self.slab_index(slab);
            }
        }
        self.partial[class] = slab;
    }

    /// The slab `slab` of `class` was just left empty: it is kept, or goes back to the buddy
    /// allocator if another of its class is empty already, or with `reclaim`.
    ///
    /// # Safety
    /// `slab` is the record of an empty slab of `class` on this client's partial list.
    #[inline]
    unsafe fn slab_emptied(&mut self, arena: &Arena, slab: *mut Slab, class: usize, reclaim: bool) {
        self.empty_slabs[class] += 1;
        if reclaim || self.empty_slabs[class] > 1 {
            // SAFETY: the caller's promise.
            unsafe { self.drop_slab(arena, slab, class) };
        }
    }

    /// Gives an empty slab's block back to the buddy allocator.
    ///
    /// # Safety
    /// `slab` is the record of an empty slab of `class` on this client's partial list.
    #[cold]
    pub(super) unsafe fn drop_slab(&mut self, arena: &Arena, slab: *mut Slab, class: usize) {
        // SAFETY: the caller's promise: `slab` and its neighbours are records of live slabs.
        unsafe {
            let (next, prev) = (self.slab_ptr((*slab).next), (*slab).prev);
            if self.partial[class] == slab {
                self.partial[class] = next;
            } else {
                (*self.slab_ptr(prev)).next = (*slab).next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
        }
        self.empty_slabs[class] -= 1;
        let pages = 1usize << self.geo.slab_order[class];
        let off = self.slab_start(slab);
        self.set_slab_pages(off, pages << self.geo.page_shift, 0);
        self.free_pages(arena, off, pages);
    }

    /// The next slab of `slab`'s partial list, or null.
    ///
    /// # Safety
    /// `slab` is the record of a live slab of this client.
    #[inline]
    pub(super) unsafe fn next_slab(&self, slab: *mut Slab) -> *mut Slab {
        // SAFETY: the caller's promise.
        self.slab_ptr(unsafe { (*slab).next })
    }
}

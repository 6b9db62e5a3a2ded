//! Slabs: the small-block front. Each size class has slabs, buddy blocks with a header and a
//! free list threaded through freed blocks; never-used blocks are handed out by a bump offset.

use core::ptr;

use super::cache::Uncached;
use super::{SLAB, State, meta};
use crate::arena::Arena;
use crate::classes::{SLAB_HEADER, class_size};
use crate::error::Result;

/// A free slab block's link, kept in its first bytes.
#[repr(C)]
pub(super) struct FreeObj {
    pub(super) next: *mut FreeObj,
}

/// The header at the start of each slab.
#[repr(C)]
pub(super) struct Slab {
    pub(super) next: *mut Slab,
    /// The previous slab of the partial list; stale (not read) while the slab heads the list,
    /// so taking the head off does not write to the next slab.
    pub(super) prev: *mut Slab,
    pub(super) free: *mut FreeObj,
    /// Offset from the slab start of the first block never handed out.
    pub(super) bump: usize,
    pub(super) live: u32,
}

impl State {
    /// The header of the slab of `class` that the block at `off` lies in.
    #[inline]
    pub(super) fn slab_of(&self, off: usize, class: usize) -> *mut Slab {
        let order = self.geo.slab_order[class];
        let page = (off >> self.geo.page_shift) & !((1usize << order) - 1);
        self.at(page << self.geo.page_shift).cast::<Slab>()
    }

    #[inline]
    pub(super) fn alloc_small(&mut self, arena: &Arena, id: u32, class: usize) -> Result<usize> {
        let mut slab = self.partial[class];
        if slab.is_null() {
            slab = self.new_slab(arena, id, class)?;
        }
        let size = class_size(class);
        // SAFETY: `slab` heads this client's partial list of `class`, so it is a live slab
        // header in a chunk this client holds, and it has a free block.
        unsafe {
            if (*slab).live == 0 {
                self.empty_slabs[class] -= 1;
            }
            let obj = if (*slab).free.is_null() {
                let obj = slab.cast::<u8>().add((*slab).bump);
                (*slab).bump += size;
                obj
            } else {
                let obj = (*slab).free;
                (*slab).free = (*obj).next;
                obj.cast::<u8>()
            };
            (*slab).live += 1;
            if (*slab).live == self.geo.slab_cap[class] {
                // `next` heads the list now; its `prev` is not read there.
                self.partial[class] = (*slab).next;
                (*slab).next = ptr::null_mut();
            }
            Ok(self.offset_of(obj))
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
        let slab = self.at(off).cast::<Slab>();
        let head = self.partial[class];
        // SAFETY: the slab's block was just handed out in a chunk this client holds, is aligned
        // to at least a buddy page, and holds the header; `head`, if not null, is a live slab
        // header of this client.
        unsafe {
            slab.write(Slab {
                next: head,
                prev: ptr::null_mut(),
                free: ptr::null_mut(),
                bump: SLAB_HEADER,
                live: 0,
            });
            if !head.is_null() {
                (*head).prev = slab;
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
        let slab = self.slab_of(off, class);
        // SAFETY: `off` is a block of this client in a slab of `class` (its page says so) that
        // is being freed, so `slab` is that slab's live header and `obj` a block of it no one
        // uses any more.
        unsafe {
            if (*slab).live == self.geo.slab_cap[class] {
                let head = self.partial[class];
                (*slab).next = head;
                (*slab).prev = ptr::null_mut();
                if !head.is_null() {
                    (*head).prev = slab;
                }
                self.partial[class] = slab;
            }
            let obj = self.at(off).cast::<FreeObj>();
            (*obj).next = (*slab).free;
            (*slab).free = obj;
            (*slab).live -= 1;
            if (*slab).live == 0 {
                self.empty_slabs[class] += 1;
                if reclaim || self.empty_slabs[class] > 1 {
                    self.drop_slab(arena, slab, class);
                }
            }
        }
    }

    /// Gives an empty slab's block back to the buddy allocator.
    ///
    /// # Safety
    /// `slab` is an empty slab of `class` on this client's partial list.
    #[cold]
    pub(super) unsafe fn drop_slab(&mut self, arena: &Arena, slab: *mut Slab, class: usize) {
        // SAFETY: the caller's promise: `slab` and its neighbours are live headers.
        unsafe {
            let (next, prev) = ((*slab).next, (*slab).prev);
            if self.partial[class] == slab {
                self.partial[class] = next;
            } else {
                (*prev).next = next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
        }
        self.empty_slabs[class] -= 1;
        let pages = 1usize << self.geo.slab_order[class];
        let off = self.offset_of(slab);
        self.set_slab_pages(off, pages << self.geo.page_shift, 0);
        self.free_pages(arena, off, pages);
    }
}

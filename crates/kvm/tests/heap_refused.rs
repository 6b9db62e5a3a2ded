//! A copy of a dirty bitmap the heap refuses is a typed error, never an abort of the process.
//!
//! The global allocator here refuses one heap request on the calling thread: the first of a
//! given size aligned to 8 bytes or more, as a process near its memory limit would. Every other
//! request is granted, so the error itself can be made.

use memvisor_kvm::{DirtyBitmap, Error};
use memvisor_testkit::refusing_heap::{Refusing, refusing_one_of_size};
use vm_memory::GuestAddress;

#[global_allocator]
static ALLOCATOR: Refusing = Refusing::ON_DEMAND.aligned_from(8);

/// A bitmap's copy takes one word per 64 pages of its region. The heap refusing them is
/// `Error::InvalidBitmap` for that bitmap from `try_clone`, and the bitmap is left as it was.
#[test]
fn bitmap_copy_refused_by_the_heap_is_an_error() {
    let page = memvisor_vmem::page_size() as u64;
    // 69 words: a size nothing else asks for while the bitmap is copied.
    let (base, size) = (GuestAddress(1 << 32), 69 * 64 * page);
    let mut bitmap = DirtyBitmap::new(base, size, page).unwrap();
    bitmap.mark(GuestAddress(base.0 + size - 1), 1);
    let before = bitmap.clone();

    let (out, refused) = refusing_one_of_size(69 * 8, || bitmap.try_clone());
    assert!(refused, "the copy asks for its words");
    let e = out.unwrap_err();
    assert!(
        matches!(e, Error::InvalidBitmap { base: b, size: s, page_size: p }
            if b == base.0 && s == size && p == page),
        "{e} ({e:?})"
    );
    assert_eq!(bitmap, before, "the bitmap is kept");

    let copy = bitmap.try_clone().unwrap();
    assert_eq!(copy, bitmap);
    assert_eq!(
        copy.dirty_pages().collect::<Vec<_>>(),
        [GuestAddress(base.0 + size - page)]
    );
}

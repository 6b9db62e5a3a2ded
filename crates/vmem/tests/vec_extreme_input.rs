//! The vectors at the edges of their input: capacity 0 and `usize::MAX`, zero-sized elements
//! at the largest capacity, requests past the capacity and past the address space, and
//! elements whose `Drop` panics while the vector truncates, clears, shrinks or drops. Each call
//! must answer with its documented result or typed error, leave the vector as it was on an
//! error, and drop every element exactly once.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};

use memvisor_vmem::vec::{ConcurrentVec, Error, Vec};

thread_local! {
    static DROPS: Cell<usize> = const { Cell::new(0) };
    static PANIC_AT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Counts its drops on this thread; the drop numbered `PANIC_AT` panics (after counting).
#[derive(Debug)]
struct Counted(u64);

impl Drop for Counted {
    fn drop(&mut self) {
        let n = DROPS.with(|d| {
            d.set(d.get() + 1);
            d.get()
        });
        if PANIC_AT.with(Cell::get) == Some(n) {
            panic!("drop {n} panics");
        }
    }
}

fn reset(panic_at: Option<usize>) {
    DROPS.with(|d| d.set(0));
    PANIC_AT.with(|p| p.set(panic_at));
}

fn drops() -> usize {
    DROPS.with(Cell::get)
}

#[test]
fn capacity_zero_refuses_every_push_and_stays_usable() {
    let mut v = Vec::<u64>::with_capacity(0).unwrap();
    assert_eq!(v.capacity(), 0);
    assert!(v.is_empty());
    assert!(v.as_slice().is_empty());
    assert!(matches!(
        v.try_push(1).unwrap_err().error(),
        Error::CapacityExceeded { .. }
    ));
    assert!(v.try_reserve(0).is_ok());
    assert!(matches!(
        v.try_reserve(1),
        Err(Error::CapacityExceeded { .. })
    ));
    assert!(v.try_insert(0, 1).is_err());
    v.truncate(0);
    v.clear();
    v.shrink_to_fit().unwrap();
    v.shrink_to(usize::MAX).unwrap();
    assert_eq!(v.drain(..).count(), 0);
    assert!(v.try_extend_from_slice(&[]).is_ok());
    assert!(v.try_extend_from_within(..).is_ok());
    assert!(v.try_split_off(0).unwrap().is_empty());
    assert!(v.spare_capacity_mut().is_empty());
    assert_eq!(v.try_clone().unwrap().capacity(), 0);

    let c = ConcurrentVec::<u64>::with_capacity(0).unwrap();
    assert!(c.try_push(1).is_err());
    assert!(c.try_push_with(|_| 1).is_err());
    assert_eq!(c.len(), 0);
    assert!(c.get(0).is_none());
    assert_eq!(c.iter().count(), 0);
    let mut pusher = c.pusher();
    assert!(pusher.try_push(1).is_err());
}

#[test]
fn capacity_past_the_address_space_is_a_typed_error() {
    for capacity in [
        usize::MAX,
        usize::MAX / 2,
        usize::MAX / 8 + 1,
        isize::MAX as usize,
    ] {
        assert!(
            matches!(
                Vec::<u64>::with_capacity(capacity),
                Err(Error::TooLarge { .. })
            ),
            "{capacity}"
        );
        assert!(
            matches!(
                ConcurrentVec::<u64>::with_capacity(capacity),
                Err(Error::TooLarge { .. })
            ),
            "{capacity}"
        );
    }
    // Within `isize::MAX` bytes but past what any address space holds on 64-bit systems.
    #[cfg(all(target_pointer_width = "64", not(miri)))]
    {
        let capacity = (isize::MAX as usize) / 16;
        assert!(matches!(
            Vec::<u64>::with_capacity(capacity),
            Err(Error::Reserve { .. })
        ));
        assert!(matches!(
            ConcurrentVec::<u64>::with_capacity(capacity),
            Err(Error::Reserve { .. })
        ));
    }
}

#[test]
fn zero_sized_elements_at_the_largest_capacity() {
    let mut v = Vec::<()>::with_capacity(usize::MAX).unwrap();
    assert_eq!(v.capacity(), usize::MAX);
    assert_eq!(v.committed_bytes(), 0);
    v.try_reserve(usize::MAX).unwrap();
    for _ in 0..1000 {
        v.push(());
    }
    assert!(matches!(
        v.try_reserve(usize::MAX),
        Err(Error::CapacityExceeded { .. })
    ));
    assert_eq!(v.len(), 1000);
    v.resize(2000, ());
    assert_eq!(v.len(), 2000);
    assert_eq!(v.split_off(1500).len(), 500);
    v.extend_from_within(..);
    assert_eq!(v.len(), 3000);
    v.truncate(usize::MAX);
    assert_eq!(v.len(), 3000);
    v.shrink_to_fit().unwrap();
    assert_eq!(v.capacity(), usize::MAX);
    v.clear();
    assert!(v.is_empty());

    // A concurrent vector keeps a ready bit per slot, zero-sized or not, and refuses a
    // capacity past `isize::MAX` (documented).
    assert!(matches!(
        ConcurrentVec::<()>::with_capacity(usize::MAX),
        Err(Error::TooLarge { .. })
    ));
    let capacity = 1 << 20;
    let c = ConcurrentVec::<()>::with_capacity(capacity).unwrap();
    for i in 0..1000 {
        assert_eq!(c.push(()), i);
    }
    assert_eq!(c.len(), 1000);
    assert_eq!(c.iter().count(), 1000);
    assert!(c.reserve(usize::MAX).is_err());
    assert!(c.reserve(capacity - 1000 + 1).is_err());
    assert!(c.reserve(capacity - 1000).is_ok());
    assert_eq!(c.len(), 1000);
}

#[test]
fn requests_past_the_capacity_change_nothing() {
    let mut v = Vec::<u32>::with_capacity(10).unwrap();
    v.extend_from_slice(&[1, 2, 3]);
    let committed = v.committed_bytes();
    for additional in [8, usize::MAX - 2, usize::MAX] {
        assert!(matches!(
            v.try_reserve(additional),
            Err(Error::CapacityExceeded { .. })
        ));
    }
    assert!(v.try_extend_from_slice(&[0; 8]).is_err());
    assert!(v.try_extend_from_within(..).is_ok());
    assert!(v.try_extend_from_within(..).is_err());
    assert_eq!(v, [1, 2, 3, 1, 2, 3]);
    assert!(v.try_insert(7, 9).is_err());
    assert!(v.committed_bytes() >= committed);
    let mut other = Vec::<u32>::with_capacity(10).unwrap();
    other.extend_from_slice(&[7; 5]);
    assert!(v.try_append(&mut other).is_err());
    assert_eq!(other.len(), 5);
    assert_eq!(v, [1, 2, 3, 1, 2, 3]);
    assert_eq!(v.len(), 6);
}

#[test]
fn panicking_drop_during_truncate_drops_every_element_once() {
    for panic_at in 1..=5 {
        reset(Some(panic_at));
        let mut v = Vec::with_capacity(8).unwrap();
        for i in 0..8 {
            v.push(Counted(i));
        }
        let truncated = catch_unwind(AssertUnwindSafe(|| v.truncate(3)));
        assert!(truncated.is_err(), "{panic_at}");
        // The elements past the new length are gone, whether their drop ran or panicked.
        assert_eq!(v.len(), 3, "{panic_at}");
        assert_eq!(drops(), 5, "{panic_at}");
        drop(v);
        assert_eq!(drops(), 8, "{panic_at}");
    }
}

#[test]
fn panicking_drop_during_clear_and_drop_drops_every_element_once() {
    for panic_at in 1..=4 {
        reset(Some(panic_at));
        let mut v = Vec::with_capacity(4).unwrap();
        for i in 0..4 {
            v.push(Counted(i));
        }
        assert!(catch_unwind(AssertUnwindSafe(|| v.clear())).is_err());
        assert!(v.is_empty());
        assert_eq!(drops(), 4, "{panic_at}");
        v.push(Counted(9));
        drop(v);
        assert_eq!(drops(), 5, "{panic_at}");
    }
    for panic_at in 1..=4 {
        reset(Some(panic_at));
        let mut v = Vec::with_capacity(4).unwrap();
        for i in 0..4 {
            v.push(Counted(i));
        }
        assert!(catch_unwind(AssertUnwindSafe(|| drop(v))).is_err());
        assert_eq!(drops(), 4, "{panic_at}");
    }
}

#[test]
fn panicking_drop_during_resize_down_and_concurrent_clear() {
    for panic_at in 1..=3 {
        reset(Some(panic_at));
        let mut v = Vec::with_capacity(6).unwrap();
        for i in 0..6 {
            v.push(Counted(i));
        }
        let resized = catch_unwind(AssertUnwindSafe(|| v.resize_with(3, || Counted(0))));
        assert!(resized.is_err());
        assert_eq!(v.len(), 3);
        assert_eq!(drops(), 3);
        drop(v);
        assert_eq!(drops(), 6);
    }
    for panic_at in 1..=4 {
        reset(Some(panic_at));
        let mut c = ConcurrentVec::with_capacity(4).unwrap();
        for i in 0..4 {
            c.push(Counted(i));
        }
        assert!(catch_unwind(AssertUnwindSafe(|| c.clear())).is_err());
        assert_eq!(c.len(), 0);
        assert_eq!(drops(), 4, "{panic_at}");
        c.push(Counted(5));
        drop(c);
        assert_eq!(drops(), 5, "{panic_at}");
    }
}

#[test]
fn shrink_to_any_value_keeps_elements() {
    let mut v = Vec::<u64>::with_capacity(1 << 16).unwrap();
    v.extend(0..5000_u64);
    for min in [usize::MAX, 1 << 20, 5000, 4999, 1, 0] {
        v.shrink_to(min).unwrap();
        assert!(v.committed_capacity() >= 5000, "{min}");
        assert_eq!(v.len(), 5000);
        assert_eq!(v[4999], 4999);
    }
    v.truncate(0);
    v.shrink_to(0).unwrap();
    v.push(7);
    assert_eq!(v, [7]);
}

thread_local! {
    static CLONES_LEFT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Counts its drops like [`Counted`]; its clone panics once `CLONES_LEFT` runs out.
#[derive(Debug)]
struct CloneBomb(Counted);

impl Clone for CloneBomb {
    fn clone(&self) -> Self {
        let left = CLONES_LEFT.with(Cell::get);
        assert!(left > 0, "clone panics");
        CLONES_LEFT.with(|c| c.set(left - 1));
        Self(Counted(self.0.0))
    }
}

#[test]
fn panicking_clone_during_try_clone_drops_the_clones_made_once() {
    for clones in 0..4 {
        reset(None);
        let mut v = Vec::with_capacity(4).unwrap();
        let c = ConcurrentVec::with_capacity(4).unwrap();
        for i in 0..4 {
            v.push(CloneBomb(Counted(i)));
            c.push(CloneBomb(Counted(i)));
        }
        CLONES_LEFT.with(|l| l.set(clones));
        assert!(catch_unwind(AssertUnwindSafe(|| v.try_clone())).is_err());
        assert_eq!(drops(), clones, "{clones}");
        CLONES_LEFT.with(|l| l.set(clones));
        assert!(catch_unwind(AssertUnwindSafe(|| c.try_clone())).is_err());
        assert_eq!(drops(), 2 * clones, "{clones}");
        assert_eq!(v.len(), 4);
        assert_eq!(c.len(), 4);
        CLONES_LEFT.with(|l| l.set(usize::MAX));
        drop((v, c));
        assert_eq!(drops(), 2 * clones + 8, "{clones}");
    }
}

#[test]
fn extreme_alignments_and_thread_blocks_are_typed_errors_or_honoured() {
    use memvisor_vmem::vec::Builder;

    // The top bit of the host's `usize`: 2^63 on 64-bit hosts (then 2^62, 2^47, 2^40), 2^31 on
    // 32-bit hosts.
    let top = 1usize << (usize::BITS - 1);
    for align in [top, top >> 1, top >> 16, top >> 23] {
        let built = Builder::new(10).alignment(align).build::<u8>();
        match built {
            Ok(v) => assert_eq!(v.as_ptr() as usize % align, 0, "{align}"),
            Err(e) => assert!(
                matches!(e, Error::Reserve { .. } | Error::TooLarge { .. }),
                "{align}: {e:?}"
            ),
        }
        let built = Builder::new(10).alignment(align).build_concurrent::<u8>();
        if let Err(e) = built {
            assert!(
                matches!(e, Error::Reserve { .. } | Error::TooLarge { .. }),
                "{align}: {e:?}"
            );
        }
    }
    for align in [3usize, usize::MAX, top + 1] {
        assert!(matches!(
            Builder::new(10).alignment(align).build::<u8>(),
            Err(Error::InvalidAlignment { .. })
        ));
    }
    for slots in [0usize, 513, usize::MAX] {
        assert!(matches!(
            Builder::new(10)
                .thread_block(slots)
                .build_concurrent::<u8>(),
            Err(Error::InvalidThreadBlock { .. })
        ));
    }
    // The default block of the largest capacity stays within bounds.
    assert_eq!(
        Builder::new(usize::MAX).thread_block_slots().unwrap(),
        8 * usize::BITS as usize
    );
}

/// The longest thread block is eight words of ready bits: 512 slots where `usize` has 64 bits,
/// 256 where it has 32. It is the default for a large capacity and accepted when asked for; one
/// more is refused with an error that names the bound.
#[test]
fn thread_block_bound_is_eight_words_and_its_error_names_it() {
    use memvisor_vmem::vec::Builder;

    let max = 8 * usize::BITS as usize;
    assert_eq!(Builder::new(max * 4096).thread_block_slots(), Ok(max));
    assert_eq!(
        Builder::new(10).thread_block(max).thread_block_slots(),
        Ok(max)
    );
    let e = Builder::new(10)
        .thread_block(max + 1)
        .thread_block_slots()
        .unwrap_err();
    assert_eq!(e, Error::InvalidThreadBlock { slots: max + 1 });
    assert_eq!(
        e.to_string(),
        format!(
            "a thread block of {} slots is not between 1 and {max}",
            max + 1
        )
    );
}

/// Elements aligned to 64 KiB. Not on Windows, whose object format (COFF) aligns sections to
/// at most 8 KiB: LLVM cannot emit such a type's values there.
#[cfg(not(windows))]
mod aligned_past_a_page {
    use super::*;

    /// An element aligned past any page size in use (64 KiB): each slot is whole pages.
    #[derive(Clone, Copy, Debug, PartialEq)]
    #[repr(align(65536))]
    struct PagesAligned(u8);

    /// A zero-sized element aligned past any page size in use.
    #[derive(Clone, Copy, Debug, PartialEq)]
    #[repr(align(65536))]
    struct ZeroAligned;

    fn aligned<T>(element: &T) -> bool {
        std::ptr::from_ref(element)
            .addr()
            .is_multiple_of(std::mem::align_of::<T>())
    }

    /// Runs `body` on a thread with a 64 MiB stack and passes its panic on. Unoptimized, each
    /// 64 KiB-aligned value gets its own stack slot and each frame that holds one drops the stack
    /// pointer by up to 64 KiB more to align it (zero-sized ones too): a test body below takes up
    /// to 0.8 MiB of stack and a `push` or `insert` up to 0.5 MiB, which overflowed the 2 MiB of
    /// a test thread in about one run of three.
    fn on_a_large_stack(body: fn()) {
        let worker = std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(body)
            .unwrap();
        if let Err(panic) = worker.join() {
            std::panic::resume_unwind(panic);
        }
    }

    /// Elements aligned past a page (the docs: "over-aligned element types work, and no slot lies
    /// outside the reservation") keep their alignment through every edit, fill the capacity
    /// exactly, and give their pages back when the vector shrinks.
    #[test]
    fn elements_aligned_past_a_page_keep_their_alignment() {
        on_a_large_stack(|| {
            let mut v = Vec::<PagesAligned>::with_capacity(8).unwrap();
            assert!(v.as_ptr().addr().is_multiple_of(65536));
            for i in 0..8 {
                v.push(PagesAligned(i));
            }
            assert_eq!(v.try_push(PagesAligned(8)).unwrap_err().into_value().0, 8);
            v.truncate(3);
            v.shrink_to_fit().unwrap();
            assert_eq!(v.committed_bytes(), 3 * 65536);
            assert_eq!(v.reservation().committed_bytes(), 3 * 65536);
            v.insert(0, PagesAligned(9));
            assert_eq!(v.remove(1), PagesAligned(0));
            assert!(v.iter().all(aligned));
            assert_eq!(
                v.iter().map(|e| e.0).collect::<std::vec::Vec<_>>(),
                [9, 1, 2]
            );
        });
    }

    /// As above, for a `ConcurrentVec`.
    #[test]
    fn concurrent_elements_aligned_past_a_page_keep_their_alignment() {
        on_a_large_stack(|| {
            let c = ConcurrentVec::with_capacity(8).unwrap();
            for i in 0..8 {
                assert_eq!(c.push(PagesAligned(i)), usize::from(i));
            }
            assert_eq!(c.try_push(PagesAligned(8)).unwrap_err().into_value().0, 8);
            assert!(c.iter().all(aligned));
            assert!(c.get(7).is_some_and(aligned));
            assert_eq!(c.iter().map(|e| e.0).sum::<u8>(), 28);
        });
    }

    /// Zero-sized elements aligned past a page: the largest capacity, no memory committed, every
    /// reference aligned.
    #[test]
    fn zero_sized_elements_aligned_past_a_page() {
        on_a_large_stack(|| {
            let mut v = Vec::<ZeroAligned>::with_capacity(usize::MAX).unwrap();
            for _ in 0..10 {
                v.push(ZeroAligned);
            }
            v.insert(3, ZeroAligned);
            v.drain(1..4);
            v.shrink_to_fit().unwrap();
            assert_eq!(v.len(), 8);
            assert_eq!(v.committed_bytes(), 0);
            assert_eq!(v.committed_capacity(), usize::MAX);
            assert!(v.as_ptr().addr().is_multiple_of(65536));
            assert!(v.iter().all(aligned));
            let c = ConcurrentVec::with_capacity(100).unwrap();
            for _ in 0..100 {
                c.push(ZeroAligned);
            }
            assert!(c.try_push(ZeroAligned).is_err());
            assert_eq!(c.iter().count(), 100);
            assert!(c.iter().all(aligned));
        });
    }
}

/// A `Vec` of zero-sized elements one short of `usize::MAX` elements: growth past the capacity
/// is refused (its `requested` saturates rather than wraps) and changes nothing, and the edits
/// that move elements work at the top of the index range.
#[test]
fn zero_sized_vec_at_the_largest_length() {
    let mut v = Vec::<()>::with_capacity(usize::MAX).unwrap();
    // SAFETY: zero-sized elements need no memory; `committed_capacity` is the capacity.
    unsafe { v.set_len(usize::MAX - 1) };
    assert_eq!(
        v.try_extend_from_slice(&[(); 5]).unwrap_err(),
        Error::CapacityExceeded {
            capacity: usize::MAX,
            requested: usize::MAX
        }
    );
    assert_eq!(v.len(), usize::MAX - 1);
    v.push(());
    assert!(v.try_push(()).is_err());
    assert!(v.try_insert(0, ()).is_err());
    assert_eq!(v.len(), usize::MAX);
    assert_eq!(v.pop(), Some(()));
    v.insert(usize::MAX - 1, ());
    v.remove(usize::MAX - 1);
    v.swap_remove(0);
    assert_eq!(v.len(), usize::MAX - 2);
    assert_eq!(v.drain(usize::MAX - 4..).count(), 2);
    assert_eq!(v.len(), usize::MAX - 4);
    v.truncate(2);
    assert_eq!(v.len(), 2);
}

/// The calls that panic where growth past the capacity is refused (`resize`, `resize_with`,
/// `extend_from_slice`, `reserve`, `reserve_exact`) change nothing, as their docs say: not the
/// elements, not the length, not the committed memory.
#[test]
fn panicking_growth_past_the_capacity_changes_nothing() {
    let mut v = memvisor_vmem::vec::Builder::new(10_000)
        .growth(memvisor_vmem::vec::Growth::Fixed(1))
        .build::<u8>()
        .unwrap();
    v.extend_from_slice(&[1, 2, 3]);
    let before = (v.len(), v.committed_bytes(), v.committed_capacity());
    type Call = Box<dyn Fn(&mut Vec<u8>)>;
    let calls: [(&str, Call); 8] = [
        ("resize", Box::new(|v| v.resize(10_001, 7))),
        (
            "resize to usize::MAX",
            Box::new(|v| v.resize(usize::MAX, 7)),
        ),
        ("resize_with", Box::new(|v| v.resize_with(10_001, || 7))),
        (
            "resize_with to usize::MAX",
            Box::new(|v| v.resize_with(usize::MAX, || 7)),
        ),
        (
            "extend_from_slice",
            Box::new(|v| v.extend_from_slice(&[0; 9_998])),
        ),
        ("reserve", Box::new(|v| v.reserve(9_998))),
        ("reserve usize::MAX", Box::new(|v| v.reserve(usize::MAX))),
        (
            "reserve_exact",
            Box::new(|v| v.reserve_exact(usize::MAX - 2)),
        ),
    ];
    for (name, call) in calls {
        assert!(
            catch_unwind(AssertUnwindSafe(|| call(&mut v))).is_err(),
            "{name}"
        );
        assert_eq!(
            (v.len(), v.committed_bytes(), v.committed_capacity()),
            before,
            "{name}"
        );
        assert_eq!(v, [1, 2, 3], "{name}");
    }
}

/// Growth steps of every size, from zero to `usize::MAX`, with and without huge pages: the
/// vectors fill their capacity exactly, never count more memory than the reservation holds, and
/// a `Vec` shrinks to the pages its elements need and grows again.
#[test]
#[cfg_attr(miri, ignore = "fills 5 MiB vectors sixteen times")]
fn growth_steps_of_any_size_fill_the_capacity_exactly() {
    use memvisor_vmem::vec::{Builder, Growth};

    type Page = [u8; 4096];
    // 5 MiB of slots: more than two huge pages, so that `huge_pages` takes effect on Linux.
    const CAPACITY: usize = 1280;
    let page = memvisor_vmem::page_size();
    for growth in [
        Growth::Fixed(0),
        Growth::Fixed(usize::MAX),
        Growth::Doubling { min: 0, max: 0 },
        Growth::Doubling {
            min: usize::MAX,
            max: usize::MAX,
        },
    ] {
        for huge_pages in [false, true] {
            let b = Builder::new(CAPACITY).growth(growth).huge_pages(huge_pages);
            let mut v = b.build::<Page>().unwrap();
            for i in 0..CAPACITY {
                v.push([u8::try_from(i % 256).unwrap(); 4096]);
                assert!(v.committed_bytes() <= v.reservation().len(), "{growth:?}");
            }
            assert!(v.try_push([0; 4096]).is_err(), "{growth:?}");
            v.truncate(1);
            v.shrink_to_fit().unwrap();
            assert_eq!(v.committed_bytes(), 4096_usize.next_multiple_of(page));
            v.push([1; 4096]);
            assert_eq!(v[0], [0; 4096]);
            assert_eq!(v[1], [1; 4096]);
            let c = b.build_concurrent::<Page>().unwrap();
            for i in 0..CAPACITY {
                assert_eq!(c.push([0; 4096]), i, "{growth:?}");
                assert!(c.committed_bytes() <= c.reservation().len(), "{growth:?}");
            }
            assert!(c.try_push([0; 4096]).is_err(), "{growth:?}");
            assert!(c.pusher().try_push([0; 4096]).is_err(), "{growth:?}");
            assert_eq!(c.iter().count(), CAPACITY);
        }
    }
}

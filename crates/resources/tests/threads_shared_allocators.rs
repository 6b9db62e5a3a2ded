//! The allocators shared between threads the way a VMM shares them: device threads allocating
//! and freeing interrupt numbers and MMIO ranges through one `Arc<Mutex<_>>` each. No ID or
//! range is handed to two holders at once, every figure adds up after the run, and the
//! allocators end exactly as they started once everything is given back.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use memvisor_resources::{
    AddressAllocator, AddressRange, AllocPolicy, AllocatedIds, Allocation, Allocations,
    AllocatorSet, Error, FreeRanges, IdAllocator, Refused, Request, RoomTree,
};
use memvisor_testkit::watchdog::within;

/// The allocators and what they hand out move to and are shared with other threads whenever
/// their tags (and IDs) allow it.
#[test]
fn allocators_and_their_views_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<IdAllocator<u32>>();
    send_sync::<IdAllocator<u64>>();
    send_sync::<AddressAllocator<Arc<str>>>();
    send_sync::<AllocatorSet<Arc<str>>>();
    send_sync::<Allocations<'static, Arc<str>>>();
    send_sync::<FreeRanges<'static, Arc<str>>>();
    send_sync::<Allocation<'static, Arc<str>>>();
    send_sync::<AllocatedIds<'static, u32>>();
    send_sync::<RoomTree>();
    send_sync::<Refused<Arc<str>>>();
    send_sync::<AddressRange>();
    send_sync::<Request>();
    send_sync::<Error>();
}

/// Claims `n` units starting at index `at` of `claims` for one holder; fails if any of them
/// is already claimed (handed to two holders at once).
fn claim(claims: &[AtomicU8], at: usize, n: usize, what: &str) {
    for c in &claims[at..at + n] {
        assert_eq!(c.swap(1, Ordering::AcqRel), 0, "{what} handed out twice");
    }
}

fn unclaim(claims: &[AtomicU8], at: usize, n: usize) {
    for c in &claims[at..at + n] {
        assert_eq!(c.swap(0, Ordering::AcqRel), 1);
    }
}

const THREADS: usize = 8;
const ROUNDS: usize = if cfg!(miri) { 20 } else { 60 };

#[test]
#[cfg_attr(miri, ignore)]
fn device_threads_share_an_irq_allocator_without_double_allocation() {
    within("IRQ threads", Duration::from_secs(20), || {
        // GSIs 5..=28: 24 numbers for 8 threads that each hold one run of 1, 2 or 4 (aligned
        // to its length) at a time, up to 32 at once, so the allocator runs out now and then.
        let first = 5u32;
        let irqs = Arc::new(Mutex::new(IdAllocator::new(first, first + 23).unwrap()));
        let claims: Arc<Vec<AtomicU8>> = Arc::new((0..24).map(|_| AtomicU8::new(0)).collect());
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (irqs, claims) = (Arc::clone(&irqs), Arc::clone(&claims));
                std::thread::spawn(move || {
                    let mut allocated = 0u64;
                    for round in 0..ROUNDS {
                        let count = [1u32, 2, 4][(round + t) % 3];
                        let got = irqs.lock().unwrap().allocate_ids(count, u64::from(count));
                        let ids = match got {
                            Ok(ids) => ids,
                            // Every number held by other threads, or no aligned run left.
                            Err(Error::OutOfIds { .. }) => continue,
                            Err(e) => panic!("allocate_ids({count}): {e}"),
                        };
                        let at = (*ids.start() - first) as usize;
                        assert_eq!(ids.clone().count(), count as usize);
                        assert_eq!(u64::from(*ids.start()) % u64::from(count), 0);
                        claim(&claims, at, count as usize, "an IRQ");
                        allocated += u64::from(count);
                        std::thread::yield_now();
                        unclaim(&claims, at, count as usize);
                        irqs.lock().unwrap().free_ids(ids).unwrap();
                    }
                    allocated
                })
            })
            .collect();
        let mut allocated = 0;
        for t in threads {
            allocated += t.join().unwrap();
        }
        assert!(allocated > 0);
        let irqs = irqs.lock().unwrap();
        assert_eq!(irqs.used(), 0);
        assert_eq!(irqs.available(), 24);
        assert_eq!(irqs.iter().count(), 0);
    });
}

#[test]
#[cfg_attr(miri, ignore)]
fn device_threads_share_an_mmio_allocator_and_its_figures_add_up() {
    within("MMIO threads", Duration::from_secs(20), || {
        // 256 pages of MMIO; each thread takes BARs of 1 to 8 pages, holds them a moment, and
        // gives them back. Both placement policies and exact reservations run at once.
        let page = 0x1000u64;
        let space = AddressRange::from_start_and_size(0xd000_0000, 256 * page).unwrap();
        let mmio: Arc<Mutex<AddressAllocator<Arc<str>>>> =
            Arc::new(Mutex::new(AddressAllocator::new(space)));
        let claims: Arc<Vec<AtomicU8>> = Arc::new((0..256).map(|_| AtomicU8::new(0)).collect());
        let stop = Arc::new(AtomicBool::new(false));
        // A reader on the side: every snapshot of the figures it takes under the lock adds up.
        let observer = {
            let (mmio, stop) = (Arc::clone(&mmio), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut looks = 0u64;
                while !stop.load(Ordering::Acquire) || looks == 0 {
                    let a = mmio.lock().unwrap();
                    let used: u128 = a.allocated().map(|x| x.range.size_u128()).sum();
                    let free: u128 = a.free_ranges().map(|r| r.size_u128()).sum();
                    assert_eq!(used, a.used());
                    assert_eq!(used + free, space.size_u128());
                    assert_eq!(a.available(), free);
                    assert_eq!(a.allocated().count(), a.len());
                    a.check_invariants().unwrap();
                    drop(a);
                    looks += 1;
                    std::thread::yield_now();
                }
                looks
            })
        };
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (mmio, claims) = (Arc::clone(&mmio), Arc::clone(&claims));
                std::thread::spawn(move || {
                    let name: Arc<str> = Arc::from(format!("dev{t}"));
                    let mut held = Vec::new();
                    for round in 0..ROUNDS {
                        let pages = 1 + (round * 7 + t * 3) % 8;
                        let size = pages as u64 * page;
                        let mut a = mmio.lock().unwrap();
                        let got = if round % 5 == 4 {
                            // An exact place another thread may hold.
                            let start = space.start() + ((round * 13 + t) % 200) as u64 * page;
                            let range = AddressRange::from_start_and_size(start, size).unwrap();
                            match a.reserve_with(range, Arc::clone(&name)) {
                                Ok(()) => Ok(range),
                                Err(e) => Err(e),
                            }
                        } else {
                            let policy = if round % 2 == 0 {
                                AllocPolicy::FirstMatch
                            } else {
                                AllocPolicy::LastMatch
                            };
                            let request = Request::new(size, page, policy).unwrap();
                            a.allocate_with(&request, Arc::clone(&name))
                        };
                        drop(a);
                        match got {
                            Ok(range) => {
                                let at = usize::try_from((range.start() - space.start()) / page)
                                    .unwrap();
                                claim(&claims, at, pages, "an MMIO page");
                                held.push((range, at, pages));
                            }
                            Err(Error::OutOfSpace { .. } | Error::Overlap { .. }) => {}
                            Err(e) => panic!("allocation of {size:#x}: {e}"),
                        }
                        // Keep up to three ranges, giving back the oldest.
                        if held.len() > 3 || round + 1 == ROUNDS {
                            for (range, at, pages) in held.drain(..held.len().min(2)) {
                                unclaim(&claims, at, pages);
                                let tag = mmio.lock().unwrap().free(&range).unwrap();
                                assert_eq!(tag, name, "freed under another device's tag");
                            }
                        }
                    }
                    for (range, at, pages) in held {
                        unclaim(&claims, at, pages);
                        assert_eq!(mmio.lock().unwrap().free(&range).unwrap(), name);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        stop.store(true, Ordering::Release);
        assert!(observer.join().unwrap() > 0);
        let mmio = mmio.lock().unwrap();
        assert!(mmio.is_empty());
        assert_eq!(mmio.used(), 0);
        assert_eq!(
            mmio.free_ranges().collect::<Vec<_>>(),
            [space],
            "everything given back is one free range again"
        );
        mmio.check_invariants().unwrap();
    });
}

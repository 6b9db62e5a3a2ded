//! Prefault and prefault for reading through `&mut self` while another thread stores into the
//! range with atomics, through the reservation's raw pointer. Where the kernel cannot populate
//! (other systems, Linux before 5.14, Miri) they touch each page: a plain read (and, for
//! prefault, a write back) of its first byte raced such a store (undefined behaviour, which
//! Miri reports as a data race), and the write back could put the old value over the new one.
//! The touches are atomic (a relaxed load; a compare-exchange of the byte with its own value),
//! so the stores stay and nothing races. Natively on Linux 5.14 and later the kernel populates
//! and nothing is touched; the tests then check the stores are kept.

use std::sync::atomic::{AtomicU8, Ordering};

use memvisor_vmem::{Reservation, page_size};

const PAGES: usize = 4;

/// A raw pointer into the reservation handed to the storing thread.
struct Shared(*mut u8);

// SAFETY: the pointer is only used for atomic stores into committed pages of a reservation
// that outlives the thread using it.
unsafe impl Send for Shared {}

/// Stores `0xA5` into the first byte of each page on another thread while `prefault` runs on
/// this one, then checks every store was kept.
fn stores_kept_across(prefault: fn(&mut Reservation, usize) -> Result<(), memvisor_vmem::Error>) {
    let page = page_size();
    let len = PAGES * page;
    let mut r = Reservation::new(len).unwrap();
    r.commit(0, len).unwrap();
    let base = Shared(r.as_ptr());
    std::thread::scope(|s| {
        s.spawn(move || {
            let base = base;
            for index in 0..PAGES {
                // SAFETY: the first byte of a committed read-write page, which stays so until
                // the scope ends; every access by this thread is atomic.
                let byte = unsafe { AtomicU8::from_ptr(base.0.add(index * page)) };
                byte.store(0xA5, Ordering::Relaxed);
            }
        });
        prefault(&mut r, len).unwrap();
    });
    for index in 0..PAGES {
        // SAFETY: a committed page; the storing thread has been joined.
        let byte = unsafe { r.as_ptr().add(index * page).read() };
        assert_eq!(byte, 0xA5, "page {index}");
    }
}

#[test]
fn prefault_keeps_bytes_stored_meanwhile_through_atomics() {
    stores_kept_across(|r, len| r.prefault(0, len));
}

#[test]
fn prefault_read_does_not_race_bytes_stored_meanwhile_through_atomics() {
    stores_kept_across(|r, len| r.prefault_read(0, len));
}

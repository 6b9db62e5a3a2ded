#![allow(missing_docs, clippy::undocumented_unsafe_blocks)]
use memvisor_vmem::{Reservation, page_size};
use std::time::Instant;
const GIB: usize = 1 << 30;
fn touch(base: *mut u8, len: usize) {
    for o in (0..len).step_by(page_size()) {
        unsafe { base.add(o).write_volatile(1) }
    }
}
fn mv() -> f64 {
    let t = Instant::now();
    let mut r = Reservation::new(64 * GIB).unwrap();
    let t1 = t.elapsed();
    for o in (0..GIB).step_by(2 << 20) {
        r.commit(o, 2 << 20).unwrap();
    }
    let t2 = t.elapsed();
    touch(r.as_ptr(), GIB);
    let t3 = t.elapsed();
    r.decommit(0, GIB).unwrap();
    let t4 = t.elapsed();
    drop(r);
    let t5 = t.elapsed();
    println!(
        "mv   reserve {:?} commit {:?} touch {:?} decommit {:?} drop {:?}",
        t1,
        t2 - t1,
        t3 - t2,
        t4 - t3,
        t5 - t4
    );
    t.elapsed().as_secs_f64() * 1e3
}
fn raw() -> f64 {
    let t = Instant::now();
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            64 * GIB,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    } as *mut u8;
    let t1 = t.elapsed();
    for o in (0..GIB).step_by(2 << 20) {
        unsafe {
            libc::mprotect(base.add(o).cast(), 2 << 20, 3);
        }
    }
    let t2 = t.elapsed();
    touch(base, GIB);
    let t3 = t.elapsed();
    unsafe {
        libc::mmap(
            base.cast(),
            GIB,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        );
    }
    let t4 = t.elapsed();
    unsafe {
        libc::munmap(base.cast(), 64 * GIB);
    }
    let t5 = t.elapsed();
    println!(
        "raw  reserve {:?} commit {:?} touch {:?} decommit {:?} drop {:?}",
        t1,
        t2 - t1,
        t3 - t2,
        t4 - t3,
        t5 - t4
    );
    t.elapsed().as_secs_f64() * 1e3
}
fn main() {
    for _ in 0..3 {
        mv();
        raw();
    }
    for _ in 0..2 {
        raw();
        mv();
    }
}

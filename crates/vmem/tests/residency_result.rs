//! `Reservation::residency` over a range whose answer (a byte per page) the host's allocator
//! refuses: a typed error, not an abort. The refusal is made certain by lowering the
//! process's address-space limit (`RLIMIT_AS`) below what the answer needs, after the
//! reservation is made, and raising it back before the test ends. One test in its own
//! binary, as the limit is the whole process's.
#![cfg(all(target_os = "linux", not(miri)))]

use memvisor_vmem::{Error, Operation, Reservation, page_size};

/// The process's address-space size now, from `/proc/self/status` (`VmSize`, in KiB).
fn address_space_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmSize:"))
        .expect("a VmSize line");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[test]
fn residency_answer_the_allocator_refuses_is_an_error() {
    // 2^30 pages: the answer is a GiB. Not on a 32-bit host, where `page_size() << 30` is 0 and
    // the longest reservation is 2 GiB: its answer (under 512 KiB) may come from address space
    // the allocator reserved already, which a lowered limit does not refuse.
    let Some(len) = page_size().checked_mul(1 << 30) else {
        eprintln!(
            "SKIPPED: 2^30 pages do not fit in a {}-bit address space",
            usize::BITS
        );
        return;
    };
    let Ok(r) = Reservation::new(len) else {
        eprintln!("SKIPPED: the address space has no room for {len:#x} bytes");
        return;
    };
    r.commit(0, page_size()).unwrap();
    // SAFETY: the first page is committed read-write.
    unsafe { r.as_ptr().write(1) };
    // Warm what the checks below allocate, so they need no new mapping under the limit.
    assert_eq!(r.residency(0, 4 * page_size()).unwrap().len(), 4);

    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid out-pointer.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut old) }, 0);
    let low = libc::rlimit {
        rlim_cur: libc::rlim_t::try_from(address_space_bytes() + (256 << 20)).unwrap(),
        rlim_max: old.rlim_max,
    };
    // SAFETY: a valid limit; lowering the soft limit is always allowed.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &low) }, 0);
    let refused = r.residency(0, len);
    let small = r.residency(0, 4 * page_size());
    // SAFETY: the soft limit goes back to what it was, which is at most the hard limit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &old) }, 0);

    match refused {
        Err(Error::NoMemory {
            operation: Operation::Residency,
            bytes,
        }) => assert_eq!(bytes, 1 << 30),
        other => panic!("expected NoMemory, got {other:?}"),
    }
    // The reservation is as it was, and answers for a range it can.
    assert_eq!(small.unwrap(), [true, false, false, false]);
    assert_eq!(r.committed_bytes(), page_size());
}

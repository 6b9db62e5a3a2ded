//! The process's mapping limit, filled for a moment: what a test needs to make the kernel
//! refuse a mapping (or the split of one) for real. A test using it must run alone in its
//! process, or hold a lock every other test of its file holds, since any mapping is refused
//! meanwhile.

use memvisor_vmem::page_size;

/// Calls `f` while the process has no mapping to spare, then gives the spare ones back.
pub fn at_mapping_limit<R>(f: impl FnOnce() -> R) -> R {
    let page = page_size();
    let mut fillers = Vec::new();
    loop {
        // Alternate protections so that neighbouring fillers do not merge into one mapping.
        let prot = if fillers.len() % 2 == 0 {
            libc::PROT_READ
        } else {
            libc::PROT_NONE
        };
        // SAFETY: a fresh anonymous mapping the kernel places where it likes.
        let m = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page,
                prot,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if m == libc::MAP_FAILED {
            break;
        }
        fillers.push(m);
    }
    let result = f();
    for m in fillers {
        // SAFETY: each filler is a mapping made above, no longer used.
        unsafe { libc::munmap(m, page) };
    }
    result
}

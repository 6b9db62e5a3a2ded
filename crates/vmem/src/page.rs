//! The page size and allocation granularity of this machine, read once at run time.

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::sys;

static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);
static GRANULARITY: AtomicUsize = AtomicUsize::new(0);

fn cached(cell: &AtomicUsize, read: fn() -> usize) -> usize {
    match cell.load(Ordering::Relaxed) {
        0 => {
            let value = read();
            cell.store(value, Ordering::Relaxed);
            value
        }
        value => value,
    }
}

/// The size of a page in bytes (4 KiB, 16 KiB and 64 KiB all exist), a power of two, read
/// from the operating system on first use. Offsets and lengths of page operations are
/// multiples of it.
///
/// # Examples
/// ```
/// let page = memvisor_vmem::page_size();
/// assert!(page.is_power_of_two());
/// ```
#[must_use]
pub fn page_size() -> usize {
    cached(&PAGE_SIZE, sys::page_size)
}

/// The granularity of reservation start addresses: 64 KiB on Windows, the page size elsewhere.
///
/// # Examples
/// ```
/// let g = memvisor_vmem::allocation_granularity();
/// assert_eq!(g % memvisor_vmem::page_size(), 0);
/// ```
#[must_use]
pub fn allocation_granularity() -> usize {
    cached(&GRANULARITY, sys::allocation_granularity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_is_power_of_two_and_stable() {
        let page = page_size();
        assert!(page.is_power_of_two());
        assert!(page >= 4096);
        assert_eq!(page_size(), page);
    }

    #[test]
    fn allocation_granularity_is_page_multiple() {
        assert_eq!(allocation_granularity() % page_size(), 0);
    }
}

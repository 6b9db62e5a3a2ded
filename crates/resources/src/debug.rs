//! `Debug` of the allocators: what they hold, not how their index is laid out, so that two
//! equal allocators print the same and a refused call, which changes no allocation (only what
//! the allocator has learned to answer faster), prints the same before and after.

use core::fmt;

/// Formats what the closure yields as a list, walking it afresh on each call, so nothing is
/// collected (and nothing allocated) to print it.
pub(crate) struct List<F>(pub(crate) F);

impl<F, It> fmt::Debug for List<F>
where
    F: Fn() -> It,
    It: IntoIterator,
    It::Item: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries((self.0)()).finish()
    }
}

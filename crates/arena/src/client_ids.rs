//! [`ClientIds`]: the identifiers of an arena's clients, each a client's while it lives and
//! given to a later client once it is deleted.
//!
//! An identifier is a `u32` (the chunk-owner table holds one per chunk), so an arena that
//! never gave one back would refuse clients after `u32::MAX - 1` had been made over its life:
//! at a thousand clients a second (one per guest program started, say) that is 50 days.
//! Instead a deleted client's identifier goes back, with its mailbox, onto a stack of retired
//! mailboxes, and the next client made takes both; a new identifier comes from the counter
//! only when none is retired. So an arena runs out of identifiers only with `u32::MAX - 1`
//! clients live at once.
//!
//! The stack is a list threaded through the retired mailboxes. Pushes are lock-free; pops are
//! one at a time (a flag taken for the few instructions of a pop), which is what keeps the
//! list free of ABA: a mailbox a popper has read as the top cannot be taken and pushed back by
//! another popper before the popper's exchange, so that exchange fails only if a push came
//! between, and the popper tries again. So a pop is not lock-free: a create that finds a
//! retired pair waits (yielding) while another thread pops, and a popper preempted there
//! delays it; nothing in a pop can panic, so the flag is never left taken. Creates that find
//! no retired pair, and deletes, never wait. A deleted client's chunks no longer name its
//! identifier (the arena clears their owners when they are given back) before its mailbox is
//! pushed (`Release`), and a pop (`Acquire`) sees that: the next holder of the identifier owns
//! none of the blocks the deleted client left.

use alloc::boxed::Box;

use crate::client::Mailbox;
use crate::error::{Error, HostTable, Result};
use crate::sync::{AtomicBool, AtomicPtr, AtomicU32, Ordering};

/// The identifiers of an arena's clients: a counter of those never given out, and the retired
/// mailboxes of deleted clients, each with its identifier.
#[derive(Debug)]
pub(crate) struct ClientIds {
    /// The next identifier never given out (identifier 0 is nobody's; `u32::MAX` none).
    next: AtomicU32,
    /// The top of the stack of retired mailboxes (null if none).
    retired: AtomicPtr<Mailbox>,
    /// Set while a pop runs.
    popping: AtomicBool,
}

impl ClientIds {
    /// Identifiers from 1, none retired.
    pub(crate) fn new() -> Self {
        Self {
            next: AtomicU32::new(1),
            retired: AtomicPtr::new(core::ptr::null_mut()),
            popping: AtomicBool::new(false),
        }
    }

    /// An identifier and an empty mailbox for a new client: a retired pair if there is one,
    /// else a new identifier and a new mailbox. The caller owns the mailbox and gives it back
    /// with [`retire`](Self::retire).
    ///
    /// # Errors
    /// [`Error::ClientIdsExhausted`] if `u32::MAX - 1` clients are live;
    /// [`Error::TablesUnavailable`] if the host's allocator refuses a new mailbox. Nothing
    /// changes on error.
    pub(crate) fn take(&self) -> Result<(u32, *mut Mailbox)> {
        if let Some(mailbox) = self.pop() {
            // SAFETY: a retired mailbox is the popper's alone, and its id was set when it was
            // made.
            return Ok((unsafe { (*mailbox).id() }, mailbox));
        }
        let mailbox = Mailbox::boxed().ok_or(Error::TablesUnavailable {
            bytes: core::mem::size_of::<Mailbox>(),
            what: HostTable::Mailbox,
        })?;
        let mut id = self.next.load(Ordering::Relaxed);
        loop {
            if id == u32::MAX {
                // A client deleted since the pop above may have retired its pair.
                let retired = self.pop();
                // SAFETY: just made by `Mailbox::boxed`, and nobody else has it.
                drop(unsafe { Box::from_raw(mailbox) });
                return match retired {
                    // SAFETY: as above.
                    Some(m) => Ok((unsafe { (*m).id() }, m)),
                    None => Err(Error::ClientIdsExhausted { max: u32::MAX - 1 }),
                };
            }
            match self
                .next
                .compare_exchange_weak(id, id + 1, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => id = now,
            }
        }
        // SAFETY: just made by `Mailbox::boxed`; nobody else has it yet.
        unsafe { (*mailbox).set_id(id) };
        Ok((id, mailbox))
    }

    /// Gives back a deleted client's mailbox, with its identifier, for a later client.
    ///
    /// # Safety
    /// `mailbox` came from [`take`](Self::take) of this value, and nothing refers to it any
    /// more: no chunk points at it and no free through the arena is pushing onto it.
    pub(crate) unsafe fn retire(&self, mailbox: *mut Mailbox) {
        // SAFETY: the caller's promise: the mailbox is ours alone.
        unsafe { (*mailbox).clear() };
        let mut top = self.retired.load(Ordering::Relaxed);
        loop {
            // SAFETY: as above; the link is read only by a popper that found the mailbox on
            // top, after the `Release` below published it.
            unsafe { (*mailbox).set_next(top) };
            match self.retired.compare_exchange_weak(
                top,
                mailbox,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => top = now,
            }
        }
    }

    /// The next identifier never given out.
    #[cfg(test)]
    pub(crate) fn next(&self) -> u32 {
        self.next.load(Ordering::Relaxed)
    }

    /// Moves the counter of identifiers never given out to `next`, as if `next - 1` clients
    /// had been made.
    #[cfg(test)]
    pub(crate) fn set_next(&self, next: u32) {
        self.next.store(next, Ordering::Relaxed);
    }

    /// The top retired mailbox, taken off the stack; `None` if there is none.
    fn pop(&self) -> Option<*mut Mailbox> {
        if self.retired.load(Ordering::Relaxed).is_null() {
            return None;
        }
        while self
            .popping
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            crate::sync::spin();
        }
        let mut top = self.retired.load(Ordering::Acquire);
        let taken = loop {
            if top.is_null() {
                break None;
            }
            // SAFETY: `top` is on the stack, and only this popper takes mailboxes off it, so
            // it stays there (and alive) until the exchange below; its link was written before
            // the `Release` that pushed it, which the `Acquire` loads saw.
            let next = unsafe { (*top).next() };
            match self.retired.compare_exchange_weak(
                top,
                next,
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => break Some(top),
                Err(now) => top = now,
            }
        };
        self.popping.store(false, Ordering::Release);
        taken
    }
}

impl Drop for ClientIds {
    fn drop(&mut self) {
        let mut at = self.retired.load(Ordering::Acquire);
        while !at.is_null() {
            // SAFETY: every mailbox on the stack was made with `Box` and is nobody's: the
            // arena is going, so no client is live.
            let mailbox = unsafe { Box::from_raw(at) };
            at = mailbox.next();
        }
    }
}

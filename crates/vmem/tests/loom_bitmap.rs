//! Loom models of the page bitmap: readers racing a writer that moves blocks between all clear,
//! all set and mixed (rewriting the words of a uniform block as it cuts it), and writers racing
//! each other.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p memvisor-vmem --release --test loom_bitmap`.
//! The bitmap is crate-private, so this file builds `src/bitmap.rs` itself, which under
//! `cfg(all(loom, test))` takes its atomics from loom, keeps its words on the heap and makes a
//! block two words (128 bits) long, so that each model is a few dozen steps.

#![cfg(loom)]
#![allow(dead_code, reason = "the models use part of the bitmap's interface")]

extern crate alloc;

#[path = "../src/bitmap.rs"]
mod bitmap;

/// What `src/bitmap.rs` names from its crate: only the error type of `new` under loom.
mod sys {
    #[derive(Debug)]
    pub(crate) enum SysError {}
}

use bitmap::{BLOCK_BITS, PageBitmap};
use loom::sync::Arc;
use loom::thread;

/// Runs `f` under loom, with at most three preemptions per execution unless
/// `LOOM_MAX_PREEMPTIONS` says otherwise.
fn model(f: impl Fn() + Send + Sync + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// A bitmap of one block (two words) whose block is mixed, with bits 3 and 69 clear and the
/// rest set: bit 3 in the first word, bit 69 in the second.
fn mixed_block() -> PageBitmap {
    assert_eq!(BLOCK_BITS, 128);
    let b = PageBitmap::new(BLOCK_BITS).unwrap();
    b.set_range(0, BLOCK_BITS);
    b.clear_range(69, 1);
    b.clear_range(3, 1);
    b
}

#[test]
fn first_clear_never_joins_words_from_before_and_after_a_rewrite() {
    // The writer sets the whole block (its state alone), then clears bit 100, which rewrites
    // the block's words as all set before clearing the bit. The states a reader can see: bits
    // 3 and 69 clear, none clear, bit 100 clear. Reading the first word in order before the
    // second, it may answer 3, none or 100, and never 69: bit 69 was clear only while bit 3
    // was clear too.
    model(|| {
        let b = Arc::new(mixed_block());
        let writer = {
            let b = Arc::clone(&b);
            thread::spawn(move || {
                assert_eq!(b.set_range(0, BLOCK_BITS), 2);
                assert_eq!(b.clear_range(100, 1), 1);
            })
        };
        let reader = {
            let b = Arc::clone(&b);
            thread::spawn(move || b.first_clear(0, BLOCK_BITS))
        };
        let found = reader.join().unwrap();
        writer.join().unwrap();
        assert!(
            matches!(found, Some(3 | 100) | None),
            "first_clear answered {found:?}"
        );
        assert_eq!(b.first_clear(0, BLOCK_BITS), Some(100));
    });
}

#[test]
fn first_set_never_joins_words_from_before_and_after_a_rewrite() {
    // As above with the values swapped: bits 3 and 69 set, the rest clear; the writer clears
    // the whole block, then sets bit 100 (rewriting the words as clear first). States: {3, 69},
    // {}, {100}.
    model(|| {
        let b = PageBitmap::new(BLOCK_BITS).unwrap();
        b.set_range(69, 1);
        b.set_range(3, 1);
        let b = Arc::new(b);
        let writer = {
            let b = Arc::clone(&b);
            thread::spawn(move || {
                assert_eq!(b.clear_range(0, BLOCK_BITS), 2);
                assert_eq!(b.set_range(100, 1), 1);
            })
        };
        let reader = {
            let b = Arc::clone(&b);
            thread::spawn(move || (b.first_set(0, BLOCK_BITS), b.count_set(0, BLOCK_BITS)))
        };
        let (first, count) = reader.join().unwrap();
        writer.join().unwrap();
        assert!(
            matches!(first, Some(3 | 100) | None),
            "first_set answered {first:?}"
        );
        assert!(count <= 2, "count_set answered {count}");
    });
}

#[test]
fn last_set_never_joins_words_from_before_and_after_a_rewrite() {
    // Bits 3 and 69 set; the writer clears the whole block, then sets bit 10 (rewriting the
    // words as clear first). States: {3, 69}, {}, {10}. Reading the second word before the
    // first, a reader may answer 69, none or 10, and never 3.
    model(|| {
        let b = PageBitmap::new(BLOCK_BITS).unwrap();
        b.set_range(69, 1);
        b.set_range(3, 1);
        let b = Arc::new(b);
        let writer = {
            let b = Arc::clone(&b);
            thread::spawn(move || {
                b.clear_range(0, BLOCK_BITS);
                b.set_range(10, 1);
            })
        };
        let reader = {
            let b = Arc::clone(&b);
            thread::spawn(move || b.last_set(0, BLOCK_BITS))
        };
        let last = reader.join().unwrap();
        writer.join().unwrap();
        assert!(
            matches!(last, Some(69 | 10) | None),
            "last_set answered {last:?}"
        );
    });
}

#[test]
fn pages_set_before_and_after_a_rewrite_read_as_set() {
    // The block is all set, with stale words from when only bit 5 was set. The writer cuts it
    // (clearing bit 100), the reader asks about bits that stay set throughout.
    model(|| {
        let b = PageBitmap::new(BLOCK_BITS).unwrap();
        b.set_range(5, 1);
        b.set_range(0, BLOCK_BITS);
        let b = Arc::new(b);
        let writer = {
            let b = Arc::clone(&b);
            thread::spawn(move || assert_eq!(b.clear_range(100, 1), 1))
        };
        let reader = {
            let b = Arc::clone(&b);
            thread::spawn(move || (b.get(70), b.first_clear(0, 100), b.last_set(0, BLOCK_BITS)))
        };
        let (bit, clear, last) = reader.join().unwrap();
        writer.join().unwrap();
        assert!(bit);
        assert_eq!(clear, None);
        assert_eq!(last, Some(BLOCK_BITS - 1));
        assert_eq!(b.first_clear(0, BLOCK_BITS), Some(100));
    });
}

#[test]
fn set_where_clear_in_never_joins_words_from_before_and_after_a_rewrite() {
    // `here` is all set throughout; `there` goes from {3, 69 clear} to all set to {100 clear}.
    model(|| {
        let here = PageBitmap::new(BLOCK_BITS).unwrap();
        here.set_range(0, BLOCK_BITS);
        let there = Arc::new(mixed_block());
        let writer = {
            let there = Arc::clone(&there);
            thread::spawn(move || {
                there.set_range(0, BLOCK_BITS);
                there.clear_range(100, 1);
            })
        };
        let reader = {
            let there = Arc::clone(&there);
            thread::spawn(move || here.first_set_where_clear_in(&there, 0, BLOCK_BITS))
        };
        let found = reader.join().unwrap();
        writer.join().unwrap();
        assert!(
            matches!(found, Some(3 | 100) | None),
            "first_set_where_clear_in answered {found:?}"
        );
    });
}

#[test]
fn concurrent_writers_count_each_change_once() {
    // Two blocks and a part; one writer sets and clears across the blocks' edge, the other
    // clears a whole block and cuts it.
    model(|| {
        let pages = 2 * BLOCK_BITS + 10;
        let b = Arc::new(PageBitmap::new(pages).unwrap());
        b.set_range(120, 20);
        let net = |set: usize, cleared: usize| set.cast_signed() - cleared.cast_signed();
        let first = {
            let b = Arc::clone(&b);
            thread::spawn(move || net(b.set_range(100, 60), b.clear_range(127, 2)))
        };
        let second = {
            let b = Arc::clone(&b);
            thread::spawn(move || net(b.set_range(10, 1), b.clear_range(0, BLOCK_BITS)))
        };
        let total = first.join().unwrap() + second.join().unwrap() + 20;
        assert_eq!(total, b.count_set(0, pages).cast_signed());
        // Whatever the order, bits 128 to 159 end set and bits 0 to 99 clear.
        assert_eq!(b.first_clear(129, 31), None);
        assert_eq!(b.first_set(0, 100), None);
    });
}

//! `vec`: memvisor's in-place vectors against the concurrent vectors of virtual-buffer 2.0,
//! boxcar and append-only-vec, a `Mutex<Vec>`, and `std::vec::Vec` where the scenario allows.
//!
//! In the memvisor column: `vec::ConcurrentVec<u64>` (default options), except for
//! `owned_push`, which is `vec::Vec<u64>`.
//!
//! - `push_1t`, `push_2t`: `param` `u64` pushes into a new vector, from one thread or from two
//!   threads pushing into the same vector at once (each half of them); ns per push is the wall time
//!   from creating the vector to the last push (threads joined) divided by `param`. The vector is
//!   dropped outside the timed region. `std-vec` pushes through `&mut` (the floor), one thread
//!   only. memvisor's vector has room for 512 more elements per thread than are pushed: with
//!   threads pushing at once, each claims slots in blocks of 512 and may leave part of its last
//!   block empty (its capacity counts slots, not elements).
//! - `push_1t_pusher`, `push_2t_pusher`: the same, with each memvisor thread pushing through its
//!   own `vec::Pusher` (blocks claimed from the first push, no per-push thread-local look-up);
//!   peers as in `push_1t`/`push_2t` (virtual-buffer and boxcar only).
//! - `owned_push`: the same single-threaded pushes into memvisor's `vec::Vec` (grows in place)
//!   against `std::vec::Vec` (reallocates).
//! - `index_random`: ns per `get` of a random index of a vector of `param` `u64`s built beforehand;
//!   the same 1 Mi random indices for everyone.
//! - `bytes_per_element`: growth of the process's resident memory (`VmRSS`) while `param` `u64`s
//!   are pushed into a new vector, divided by `param`. The same measure for every contender;
//!   memvisor's vector touches every page it commits, so for it this is also its committed memory
//!   (up to one growth step).

use std::hint::black_box;
use std::sync::Mutex;

use memvisor_vmem::vec::{ConcurrentVec, Vec as MemVec};

use crate::harness::{Bench, ns_per_iter, ns_per_op};
use crate::report::{Better, Row};
use crate::util::{SplitMix64, rss_bytes};

/// The headline size of every scenario.
pub const ELEMENTS: u64 = 10_000_000;

/// Number of random reads in `index_random`.
const READS: usize = 1 << 20;

/// Runs every scenario of the group.
pub fn run(bench: &Bench) -> Vec<Row> {
    vec![
        push_1t(bench, ELEMENTS),
        push_2t(bench, ELEMENTS),
        push_pusher(bench, "push_1t_pusher", ELEMENTS, 1),
        push_pusher(bench, "push_2t_pusher", ELEMENTS, 2),
        owned_push(bench, ELEMENTS),
        index_random(bench, ELEMENTS),
        bytes_per_element(bench, ELEMENTS),
    ]
}

fn capacity(n: u64) -> usize {
    usize::try_from(n).expect("element count fits in usize")
}

/// Pushes `0..n` from `threads` threads into the shared vector made by `make`, with `push`,
/// and returns ns per push; the vector is dropped after timing.
fn shared_pushes<V: Sync>(
    n: u64,
    threads: u64,
    make: impl FnOnce() -> V,
    push: impl Fn(&V, u64) + Sync,
) -> f64 {
    ns_per_op(n, || {
        let v = make();
        if threads == 1 {
            for i in 0..n {
                push(&v, black_box(i));
            }
        } else {
            let per = n / threads;
            std::thread::scope(|s| {
                for t in 0..threads {
                    let (v, push) = (&v, &push);
                    s.spawn(move || {
                        for i in t * per..(t + 1) * per {
                            push(v, black_box(i));
                        }
                    });
                }
            });
        }
        v
    })
}

/// Slots a memvisor vector may leave empty per pushing thread: the rest of its last block.
const BLOCK_SLACK: u64 = 512;

fn push_scenario(bench: &Bench, name: &str, n: u64, threads: u64) -> Row {
    let cap = capacity(n);
    let memvisor_cap = capacity(n + threads * BLOCK_SLACK);
    let mut scenario = bench
        .scenario(name, n, "ns/op", Better::Lower)
        .memvisor(move || {
            Ok(shared_pushes(
                n,
                threads,
                || ConcurrentVec::with_capacity(memvisor_cap).expect("reserve"),
                |v, x| {
                    v.push(x);
                },
            ))
        })
        .peer("virtual-buffer", move || {
            Ok(shared_pushes(
                n,
                threads,
                || virtual_buffer::concurrent::vec::Vec::new(cap),
                |v, x| {
                    v.push(x);
                },
            ))
        })
        .peer("boxcar", move || {
            Ok(shared_pushes(n, threads, boxcar::Vec::new, |v, x| {
                v.push(x);
            }))
        })
        .peer("append-only-vec", move || {
            Ok(shared_pushes(
                n,
                threads,
                append_only_vec::AppendOnlyVec::new,
                |v, x| {
                    v.push(x);
                },
            ))
        })
        .peer("mutex-vec", move || {
            Ok(shared_pushes(
                n,
                threads,
                || Mutex::new(Vec::new()),
                |v, x| v.lock().expect("not poisoned").push(x),
            ))
        });
    scenario = if threads == 1 {
        scenario.peer("std-vec", move || {
            Ok(ns_per_op(n, || {
                let mut v = Vec::new();
                for i in 0..n {
                    v.push(black_box(i));
                }
                v
            }))
        })
    } else {
        scenario.unsupported("std-vec", "no shared push (1 thread only)")
    };
    scenario.run()
}

/// `push_1t`: one thread pushes `n` `u64`s.
pub fn push_1t(bench: &Bench, n: u64) -> Row {
    push_scenario(bench, "push_1t", n, 1)
}

/// `push_2t`: two threads push `n / 2` `u64`s each into one vector.
pub fn push_2t(bench: &Bench, n: u64) -> Row {
    push_scenario(bench, "push_2t", n, 2)
}

/// `push_1t_pusher` / `push_2t_pusher`: `threads` threads push `n / threads` `u64`s each, memvisor
/// through one `Pusher` per thread.
pub fn push_pusher(bench: &Bench, name: &str, n: u64, threads: u64) -> Row {
    // Each pusher may leave part of its last block empty.
    let cap = capacity(n + threads * BLOCK_SLACK);
    bench
        .scenario(name, n, "ns/op", Better::Lower)
        .memvisor(move || {
            Ok(ns_per_op(n, || {
                let v = ConcurrentVec::with_capacity(cap).expect("reserve");
                let per = n / threads;
                std::thread::scope(|s| {
                    for t in 0..threads {
                        let v = &v;
                        s.spawn(move || {
                            let mut pusher = v.pusher();
                            for i in t * per..(t + 1) * per {
                                pusher.push(black_box(i));
                            }
                        });
                    }
                });
                v
            }))
        })
        .peer("virtual-buffer", move || {
            Ok(shared_pushes(
                n,
                threads,
                || virtual_buffer::concurrent::vec::Vec::new(capacity(n)),
                |v, x| {
                    v.push(x);
                },
            ))
        })
        .peer("boxcar", move || {
            Ok(shared_pushes(n, threads, boxcar::Vec::new, |v, x| {
                v.push(x);
            }))
        })
        .run()
}

/// `owned_push`: `n` pushes through `&mut` into memvisor's `vec::Vec` and `std::vec::Vec`.
pub fn owned_push(bench: &Bench, n: u64) -> Row {
    let cap = capacity(n);
    bench
        .scenario("owned_push", n, "ns/op", Better::Lower)
        .memvisor(move || {
            Ok(ns_per_op(n, || {
                let mut v = MemVec::with_capacity(cap).expect("reserve");
                for i in 0..n {
                    v.push(black_box(i));
                }
                v
            }))
        })
        .peer("std-vec", move || {
            Ok(ns_per_op(n, || {
                let mut v = Vec::new();
                for i in 0..n {
                    v.push(black_box(i));
                }
                v
            }))
        })
        .run()
}

/// `index_random`: random reads from vectors of `n` `u64`s.
pub fn index_random(bench: &Bench, n: u64) -> Row {
    let cap = capacity(n);
    let mut rng = SplitMix64::new(7);
    let order: Vec<usize> = (0..READS).map(|_| rng.below_usize(cap)).collect();
    let ours = ConcurrentVec::with_capacity(cap).expect("reserve");
    let theirs = virtual_buffer::concurrent::vec::Vec::new(cap);
    let bx = boxcar::Vec::new();
    let std_v: Vec<u64> = (0..n).collect();
    for i in 0..n {
        ours.push(i);
        theirs.push(i);
        bx.push(i);
    }
    let order = &order;
    bench
        .scenario("index_random", n, "ns/op", Better::Lower)
        .memvisor(|| {
            Ok(ns_per_iter(order.len(), |i| {
                ours.get(order[i]).copied().unwrap_or(0)
            }))
        })
        .peer("virtual-buffer", || {
            Ok(ns_per_iter(order.len(), |i| {
                theirs.get(order[i]).copied().unwrap_or(0)
            }))
        })
        .peer("boxcar", || {
            Ok(ns_per_iter(order.len(), |i| {
                bx.get(order[i]).copied().unwrap_or(0)
            }))
        })
        .peer("std-vec", || {
            Ok(ns_per_iter(order.len(), |i| {
                std_v.get(order[i]).copied().unwrap_or(0)
            }))
        })
        .run()
}

/// Resident bytes gained while `fill` builds a vector, per element; the vector is dropped
/// after the second reading.
fn rss_per_element<V>(n: u64, fill: impl FnOnce() -> V) -> Result<f64, String> {
    let before = rss_bytes().map_err(|e| format!("reading VmRSS: {e}"))?;
    let v = fill();
    let after = rss_bytes().map_err(|e| format!("reading VmRSS: {e}"))?;
    drop(black_box(v));
    #[allow(clippy::cast_precision_loss, reason = "byte counts far below 2^52")]
    Ok(after.saturating_sub(before) as f64 / n as f64)
}

/// `bytes_per_element`: resident memory per `u64` after `n` pushes.
pub fn bytes_per_element(bench: &Bench, n: u64) -> Row {
    let cap = capacity(n);
    bench
        .scenario("bytes_per_element", n, "B/elem", Better::Lower)
        .memvisor(move || {
            rss_per_element(n, || {
                let v = ConcurrentVec::with_capacity(cap).expect("reserve");
                for i in 0..n {
                    v.push(i);
                }
                v
            })
        })
        .peer("virtual-buffer", move || {
            rss_per_element(n, || {
                let v = virtual_buffer::concurrent::vec::Vec::new(cap);
                for i in 0..n {
                    v.push(i);
                }
                v
            })
        })
        .peer("boxcar", move || {
            rss_per_element(n, || {
                let v = boxcar::Vec::new();
                for i in 0..n {
                    v.push(i);
                }
                v
            })
        })
        .run()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_scenarios_small_count_measure_everyone() {
        let bench = Bench::with_repeats(true, 1);
        for row in [push_1t(&bench, 10_000), push_2t(&bench, 10_000)] {
            assert!(row.memvisor.is_some(), "{}", row.scenario);
            for peer in ["virtual-buffer", "boxcar", "append-only-vec", "mutex-vec"] {
                assert!(row.peers[peer].is_some(), "{} {peer}", row.scenario);
            }
        }
    }

    #[test]
    fn index_and_bytes_small_count_measure_everyone() {
        let bench = Bench::with_repeats(true, 1);
        let row = index_random(&bench, 10_000);
        assert!(row.memvisor.is_some());
        assert!(row.peers["std-vec"].is_some());
        let row = bytes_per_element(&bench, 100_000);
        assert!(row.memvisor.is_some());
        assert!(row.peers["boxcar"].is_some());
        let row = owned_push(&bench, 10_000);
        assert!(row.memvisor.is_some());
        let row = push_pusher(&bench, "push_2t_pusher", 10_000, 2);
        assert!(row.memvisor.is_some());
        assert!(row.peers["boxcar"].is_some());
    }
}

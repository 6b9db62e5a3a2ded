//! Property tests: any bytes as a spec, and valid specs with random edits, make `memvisor plan`
//! exit with 0 or 2 — never a panic (which fails the test case), never another code. Inputs are
//! at most a few KiB, so each case takes milliseconds.

use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;

mod common;

use common::{Memvisor, example, scratch};

fn examples() -> Vec<String> {
    let mut texts = vec![memvisor_cli::spec::DEFAULT_SPEC.to_owned()];
    for name in ["microvm.toml", "large-vm.toml", "aarch64.toml"] {
        texts.push(std::fs::read_to_string(example(name)).unwrap());
    }
    texts
}

/// Pieces that make edits hit the interesting paths: limits, overflow, tables, types.
const PIECES: &[&str] = &[
    "\n",
    "=",
    "\"",
    "[[device]]\ntype = \"virtio-pmem\"\ndax_size = \"2MiB\"\n",
    "[[device]]\ntype = \"virtio-net\"\n",
    "[[numa]]\nsize = \"0x8000000000000000\"\n",
    "[hotplug]\nslots = 1024\nslot_size = \"16TiB\"\n",
    "18446744073709551615",
    "0xffffffffffffffff",
    "\"0xfffffffffffff000\"",
    "-1",
    "4294967295",
    "\"1.5GiB\"",
    "\"16383TiB\"",
    "phys_bits = 52\n",
    "phys_bits = 32\n",
    "irq = 4294967295\n",
    "irq = 127\n",
    "address = \"0xfffffffffffff000\"\n",
    "mmio_size = \"0x8000000000000000\"\n",
    "arch = \"aarch64\"\n",
    "memory.size = \"4KiB\"\n",
    "{",
    "[",
    "]",
    "\\u001b",
    "name = \"\\u202e\"\n",
    "huge_pages = \"1GiB\"\n",
];

static CASE: AtomicUsize = AtomicUsize::new(0);

/// Runs `memvisor plan` in-process on `bytes` with each extra argument list; returns the codes.
fn plan_codes(bytes: &[u8]) -> Vec<u8> {
    let case = CASE.fetch_add(1, Ordering::Relaxed);
    let path = scratch(&format!("prop-{}-{case}.toml", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    let file = path.to_str().unwrap();
    let codes = [
        &["plan", file][..],
        &["plan", "--json", file],
        &["plan", "--arch", "aarch64", file],
    ]
    .into_iter()
    .map(|args| Memvisor::new().run_bytes(args).0)
    .collect();
    std::fs::remove_file(&path).unwrap();
    codes
}

#[derive(Clone, Debug)]
enum Edit {
    Delete { at: usize, len: usize },
    Insert { at: usize, piece: usize },
    Byte { at: usize, byte: u8 },
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(at, len)| Edit::Delete { at, len }),
        (any::<usize>(), 0..PIECES.len()).prop_map(|(at, piece)| Edit::Insert { at, piece }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Edit::Byte { at, byte }),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    for e in edits {
        let len = bytes.len();
        match *e {
            Edit::Delete { at, len: n } if len > 0 => {
                let at = at % len;
                bytes.drain(at..(at + n).min(len));
            }
            Edit::Insert { at, piece } => {
                let at = at % (len + 1);
                bytes.splice(at..at, PIECES[piece].bytes());
            }
            Edit::Byte { at, byte } if len > 0 => bytes[at % len] = byte,
            _ => {}
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 256 }))]

    #[test]
    fn plan_any_bytes_exits_0_or_2(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        for code in plan_codes(&bytes) {
            prop_assert!(code == 0 || code == 2, "exit code {code}");
        }
    }

    #[test]
    fn plan_any_text_exits_0_or_2(text in "[\\[\\]a-z_=\". 0-9\n{},#x-]{0,400}") {
        for code in plan_codes(text.as_bytes()) {
            prop_assert!(code == 0 || code == 2, "exit code {code}");
        }
    }

    #[test]
    fn plan_edited_spec_exits_0_or_2(
        which in 0usize..4,
        edits in proptest::collection::vec(edit(), 1..8),
    ) {
        let bytes = apply(&examples()[which], &edits);
        for code in plan_codes(&bytes) {
            prop_assert!(code == 0 || code == 2, "exit code {code}");
        }
    }
}

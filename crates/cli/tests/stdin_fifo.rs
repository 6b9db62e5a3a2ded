//! Standard input that is a FIFO (made with `mkfifo`), given to the command as a shell gives
//! `< fifo`: a spec whose writer has already written it and left is read to its end at once,
//! as a pipe's is.
#![cfg(target_os = "linux")]

use std::io::Write;
use std::process::{Command, Stdio};

mod common;

const SPEC: &str = "[memory]\nsize = \"1GiB\"\n";

#[test]
fn spec_on_a_fifo_whose_writer_is_gone_is_read_to_its_end() {
    let dir = std::env::temp_dir().join(format!("memvisor-stdin-fifo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("fifo");
    if !Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success())
    {
        std::fs::remove_dir_all(&dir).unwrap();
        return;
    }
    let writing = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut writer = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
            writer.write_all(SPEC.as_bytes()).unwrap();
        })
    };
    // Opened as a shell opens `< fifo`: blocking, once the writer is there; the writer is gone
    // before the command starts.
    let reader = std::fs::File::open(&fifo).unwrap();
    writing.join().unwrap();
    let output = common::binary_from(&["plan", "-"], Stdio::from(reader));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("RAM 1 GiB"), "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}

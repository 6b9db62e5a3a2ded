//! `child_process::output_within` gives a child's output however much it writes (more than a
//! pipe holds included), keeping its start and end, and kills a child that runs past its
//! deadline, giving what it wrote by then. The children are this test binary again.
#![cfg(not(miri))]

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use memvisor_testkit::child_process::{KEPT_HEAD, KEPT_TAIL, output_within};

/// Set in a child: what it writes (`<stdout bytes>,<stderr bytes>`), or `hang`.
const CHILD: &str = "MEMVISOR_TESTKIT_CHILD_OUTPUT";

/// Far more than any child here needs: one past it hung.
const LIMIT: Duration = Duration::from_secs(20);

/// `len` bytes of numbered lines, starting with `first` and ending with `last`; none for 0.
fn text(len: usize, first: &str, last: &str) -> Vec<u8> {
    if len == 0 {
        return Vec::new();
    }
    let mut bytes = first.as_bytes().to_vec();
    let mut line = 0u64;
    while bytes.len() + last.len() < len {
        bytes.extend_from_slice(format!("line {line}\n").as_bytes());
        line += 1;
    }
    bytes.truncate(len - last.len());
    bytes.extend_from_slice(last.as_bytes());
    bytes
}

/// Runs this test again as a child asked to write `what`.
fn child(test: &str, what: &str, limit: Duration) -> Result<std::process::Output, String> {
    output_within(
        Command::new(std::env::current_exe().unwrap())
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, what),
        limit,
    )
    // The start of a hung child's output: enough to check, and a failure here stays readable.
    .map_err(|hung| hung.to_string().chars().take(4096).collect())
}

/// The child's part: writes what it is asked to, or hangs.
fn child_part() -> bool {
    let Ok(what) = std::env::var(CHILD) else {
        return false;
    };
    if what == "hang" {
        println!("started, now hanging");
        std::io::stdout().flush().unwrap();
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    let (out, err) = what.split_once(',').unwrap();
    let (out, err): (usize, usize) = (out.parse().unwrap(), err.parse().unwrap());
    // Written whole, before the harness's own lines; the parent reads them while the child
    // writes.
    std::io::stdout()
        .write_all(&text(out, "FIRST OUT\n", "LAST OUT\n"))
        .unwrap();
    std::io::stderr()
        .write_all(&text(err, "FIRST ERR\n", "LAST ERR\n"))
        .unwrap();
    true
}

#[test]
fn a_child_writing_more_than_a_pipe_holds_ends_with_its_output() {
    if child_part() {
        return;
    }
    let test = "a_child_writing_more_than_a_pipe_holds_ends_with_its_output";
    let start = Instant::now();
    // 200 KiB and 100 KiB: each more than a pipe holds, both less than is kept.
    let out = child(test, "204800,102400", LIMIT).unwrap();
    assert!(start.elapsed() < LIMIT);
    assert!(out.status.success(), "{}", out.status);
    // Everything the child wrote, after the harness's first lines and before its last.
    let written = text(204_800, "FIRST OUT\n", "LAST OUT\n");
    let at = out
        .stdout
        .windows(10)
        .position(|w| w == b"FIRST OUT\n")
        .unwrap();
    assert!(out.stdout[at..].starts_with(&written));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
    assert_eq!(out.stderr, text(102_400, "FIRST ERR\n", "LAST ERR\n"));
}

#[test]
fn a_child_writing_past_the_bound_keeps_its_start_and_end() {
    if child_part() {
        return;
    }
    let test = "a_child_writing_past_the_bound_keeps_its_start_and_end";
    let len = 3 * (KEPT_HEAD + KEPT_TAIL);
    let out = child(test, &format!("0,{len}"), LIMIT).unwrap();
    assert!(out.status.success());
    let written = text(len, "FIRST ERR\n", "LAST ERR\n");
    let dropped = len - KEPT_HEAD - KEPT_TAIL;
    let marker = format!("\n[{dropped} bytes left out]\n");
    assert_eq!(out.stderr.len(), KEPT_HEAD + marker.len() + KEPT_TAIL);
    assert_eq!(out.stderr[..KEPT_HEAD], written[..KEPT_HEAD]);
    assert_eq!(
        out.stderr[KEPT_HEAD..KEPT_HEAD + marker.len()],
        *marker.as_bytes()
    );
    assert_eq!(
        out.stderr[KEPT_HEAD + marker.len()..],
        written[len - KEPT_TAIL..]
    );
}

#[test]
fn a_child_past_its_deadline_is_killed_and_gives_what_it_wrote() {
    if child_part() {
        return;
    }
    let test = "a_child_past_its_deadline_is_killed_and_gives_what_it_wrote";
    let start = Instant::now();
    let hung = child(test, "hang", Duration::from_millis(500)).unwrap_err();
    assert!(start.elapsed() < LIMIT);
    assert!(hung.contains("ran past 500ms and was killed"), "{hung}");
    assert!(hung.contains("started, now hanging"), "{hung}");
}

#[test]
fn each_stream_at_the_bound_is_whole_and_one_byte_past_it_leaves_one_out() {
    if child_part() {
        return;
    }
    let test = "each_stream_at_the_bound_is_whole_and_one_byte_past_it_leaves_one_out";
    let whole = KEPT_HEAD + KEPT_TAIL;
    let out = child(test, &format!("{whole},{whole}"), LIMIT).unwrap();
    assert!(out.status.success());
    assert!(out.stderr == text(whole, "FIRST ERR\n", "LAST ERR\n"));
    // The harness's own lines come on top of the child's on standard output.
    assert!(String::from_utf8_lossy(&out.stdout).contains(" bytes left out]\n"));

    let past = whole + 1;
    let out = child(test, &format!("{past},{past}"), LIMIT).unwrap();
    assert!(out.status.success());
    let written = text(past, "FIRST ERR\n", "LAST ERR\n");
    let marker = b"\n[1 bytes left out]\n";
    assert_eq!(out.stderr.len(), whole + marker.len());
    assert!(out.stderr[..KEPT_HEAD] == written[..KEPT_HEAD]);
    assert!(out.stderr[KEPT_HEAD..KEPT_HEAD + marker.len()] == *marker);
    assert!(out.stderr[KEPT_HEAD + marker.len()..] == written[KEPT_HEAD + 1..]);
}

/// A shell running `script`, through `output_within` with `limit`.
#[cfg(unix)]
fn shell(
    script: &str,
    limit: Duration,
) -> Result<std::process::Output, memvisor_testkit::child_process::Hung> {
    output_within(Command::new("sh").args(["-c", script]), limit)
}

#[test]
#[cfg(unix)]
fn a_deadline_of_zero_kills_the_child_at_once() {
    let start = Instant::now();
    let hung = shell("sleep 600", Duration::ZERO).unwrap_err();
    assert!(start.elapsed() < LIMIT);
    assert_eq!(hung.limit, Duration::ZERO);
}

#[test]
#[cfg(unix)]
fn a_child_killed_by_a_signal_gives_its_status_and_output() {
    use std::os::unix::process::ExitStatusExt;
    let out = shell("echo before; echo also >&2; kill -9 $$; echo after", LIMIT).unwrap();
    assert_eq!(out.status.signal(), Some(9));
    assert_eq!(out.stdout, b"before\n");
    assert_eq!(out.stderr, b"also\n");
}

#[test]
#[cfg(unix)]
fn a_child_closing_its_pipes_and_running_on_is_killed_at_its_deadline() {
    let start = Instant::now();
    let hung = shell(
        "echo closing; exec >&- 2>&-; sleep 600",
        Duration::from_millis(300),
    )
    .unwrap_err();
    assert!(start.elapsed() < LIMIT);
    assert_eq!(hung.stdout, b"closing\n");
}

/// Whether the process `pid` ended (gone, or a zombie no one reaped yet).
#[cfg(target_os = "linux")]
fn ended(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
    })
}

#[test]
#[cfg(target_os = "linux")]
fn a_process_the_child_left_holding_the_pipes_is_killed_with_it() {
    // The shell ends at once; the `sleep` it started holds both pipes, and would for 600 s.
    for limit in [LIMIT, Duration::from_millis(300)] {
        let script = if limit == LIMIT {
            "sleep 600 & echo $!"
        } else {
            "sleep 600 & echo $!; wait"
        };
        let start = Instant::now();
        let stdout = match shell(script, limit) {
            Ok(out) => out.stdout,
            Err(hung) => hung.stdout,
        };
        let pid = String::from_utf8(stdout).unwrap();
        let pid = pid.trim();
        assert!(!pid.is_empty());
        // Killed when the shell ended (or at the deadline), not left for the readers' grace.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !ended(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(ended(pid), "{limit:?}: the sleep {pid} still runs");
        assert!(start.elapsed() < LIMIT);
    }
}

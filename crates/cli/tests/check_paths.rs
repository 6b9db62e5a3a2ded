//! `memvisor check` on real paths: `memory.hugetlbfs` is judged where the kernel resolves it
//! (symlinks followed, `..` taken where the kernel takes it), and each fix names a path that
//! the kernel will find. One test mounts hugetlbfs in a private mount namespace and runs only
//! as root where `unshare` can make one; elsewhere it says why it is skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod common;

/// A folder of its own under the temporary folder, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("memvisor-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // The folder as the kernel names it (the temporary folder may be behind a symlink).
        Self(std::fs::canonicalize(&dir).unwrap())
    }

    fn path(&self, rest: &str) -> String {
        format!("{}/{rest}", self.0.display())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn spec(hugetlbfs: &str) -> String {
    format!(
        "[memory]\nsize = \"64MiB\"\nbacking = \"hugetlbfs\"\nhugetlbfs = \"{hugetlbfs}\"\nhuge_pages = \"2MiB\"\n"
    )
}

/// The `hugetlbfs` finding of `memvisor check --json` for a spec whose folder is `hugetlbfs`.
fn hugetlbfs_finding(dir: &Scratch, hugetlbfs: &str) -> Value {
    let file = dir.path("vm.toml");
    std::fs::write(&file, spec(hugetlbfs)).unwrap();
    let (code, out, err) = common::run(&["check", "--json", file.as_str()]);
    assert!(code <= 1, "{err}");
    finding_of(out.as_bytes())
}

fn finding_of(json: &[u8]) -> Value {
    let doc: Value = serde_json::from_slice(json).unwrap();
    doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "hugetlbfs")
        .cloned()
        .unwrap_or_else(|| panic!("no hugetlbfs finding: {doc}"))
}

fn text(finding: &Value, field: &str) -> String {
    finding[field].as_str().unwrap_or_default().to_owned()
}

/// A symlink that leads nowhere: the fix makes the folder it leads to, never a mount over
/// the symlink (which `mount` would follow into the missing folder, and fail).
#[test]
#[cfg_attr(miri, ignore)]
fn check_dangling_symlink_fix_names_where_it_leads() {
    let dir = Scratch::new("check-dangling");
    std::os::unix::fs::symlink(dir.path("huge"), dir.path("link")).unwrap();
    let f = hugetlbfs_finding(&dir, &dir.path("link"));
    assert_eq!(f["status"], "fail", "{f}");
    let (detail, fix) = (text(&f, "detail"), text(&f, "fix"));
    assert!(
        detail.contains(&format!("(resolves to {})", dir.path("huge"))),
        "{detail}"
    );
    assert!(
        fix.contains(&format!(
            "mount -t hugetlbfs -o pagesize=2M none {}",
            dir.path("huge")
        )),
        "{fix}"
    );
    assert!(!fix.contains("/link"), "{fix}");
}

/// A missing folder under a symlink is where the symlink leads: the fix makes it there.
#[test]
#[cfg_attr(miri, ignore)]
fn check_missing_folder_under_a_symlink_is_made_where_it_leads() {
    let dir = Scratch::new("check-under-link");
    std::fs::create_dir(dir.path("real")).unwrap();
    std::os::unix::fs::symlink("real", dir.path("link")).unwrap();
    let f = hugetlbfs_finding(&dir, &dir.path("link/sub"));
    assert_eq!(f["status"], "fail", "{f}");
    let (detail, fix) = (text(&f, "detail"), text(&f, "fix"));
    assert!(
        detail.contains(&format!("(resolves to {})", dir.path("real/sub"))),
        "{detail}"
    );
    assert!(fix.contains(&dir.path("real/sub")), "{fix}");
    assert!(!fix.contains("/link"), "{fix}");
}

/// `..` after a folder that does not exist cannot be taken: the path does not resolve,
/// whatever its text reads as, and no `mkdir -p` of what it reads as makes it resolve.
#[test]
#[cfg_attr(miri, ignore)]
fn check_dot_dot_after_a_missing_folder_does_not_resolve() {
    let dir = Scratch::new("check-dot-dot");
    std::fs::create_dir(dir.path("huge")).unwrap();
    let f = hugetlbfs_finding(&dir, &dir.path("gone/../huge"));
    assert_eq!(f["status"], "fail", "{f}");
    let (detail, fix) = (text(&f, "detail"), text(&f, "fix"));
    assert!(detail.contains("does not resolve"), "{detail}");
    assert!(detail.contains(&dir.path("gone")), "{detail}");
    assert!(
        fix.contains(&format!("memory.hugetlbfs = \"{}\"", dir.path("huge"))),
        "{fix}"
    );
}

/// A path that goes on past a file does not resolve; the fix is a folder of its own.
#[test]
#[cfg_attr(miri, ignore)]
fn check_path_through_a_file_does_not_resolve() {
    let dir = Scratch::new("check-through-file");
    std::fs::write(dir.path("file"), b"").unwrap();
    let f = hugetlbfs_finding(&dir, &dir.path("file/huge"));
    assert_eq!(f["status"], "fail", "{f}");
    let (detail, fix) = (text(&f, "detail"), text(&f, "fix"));
    assert!(detail.contains("does not resolve"), "{detail}");
    assert!(
        detail.contains(&format!("{} is not a directory", dir.path("file"))),
        "{detail}"
    );
    assert!(fix.contains("DIR an empty directory of its own"), "{fix}");
}

/// Whether this process runs as root (user id 0).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// Runs `memvisor check --json SPEC` in a private mount namespace with a hugetlbfs of 2 MiB
/// pages mounted on `mount_point` first; why not, when no such namespace or mount can be
/// made here.
fn check_with_hugetlbfs_at(mount_point: &Path, spec: &Path) -> Result<Value, String> {
    if !is_root() {
        return Err("not root".to_owned());
    }
    // Exit code 77: the mount namespace or the mount could not be made.
    let script =
        r#"mount -t hugetlbfs -o pagesize=2M none "$1" || exit 77; exec "$2" check --json "$3""#;
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(mount_point)
        .arg(env!("CARGO_BIN_EXE_memvisor"))
        .arg(spec)
        .output()
        .map_err(|e| format!("unshare: {e}"))?;
    match out.status.code() {
        Some(0 | 1) => Ok(finding_of(&out.stdout)),
        _ => Err(format!(
            "no private mount namespace with a hugetlbfs mount: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// A symlink to a hugetlbfs mount is that mount: it passes, and the detail says where it
/// leads.
#[test]
#[cfg_attr(miri, ignore)]
fn check_symlink_to_a_hugetlbfs_mount_passes() {
    let dir = Scratch::new("check-mounted-link");
    std::fs::create_dir(dir.path("mnt")).unwrap();
    std::os::unix::fs::symlink(dir.path("mnt"), dir.path("link")).unwrap();
    let file = dir.path("vm.toml");
    std::fs::write(&file, spec(&dir.path("link"))).unwrap();
    let f = match check_with_hugetlbfs_at(&dir.0.join("mnt"), Path::new(&file)) {
        Ok(f) => f,
        Err(why) => {
            eprintln!("check_symlink_to_a_hugetlbfs_mount_passes skipped: {why}");
            return;
        }
    };
    assert_eq!(f["status"], "ok", "{f}");
    assert_eq!(
        text(&f, "detail"),
        format!(
            "{} (resolves to {}) is a hugetlbfs mount of 2 MiB pages",
            dir.path("link"),
            dir.path("mnt")
        )
    );
}

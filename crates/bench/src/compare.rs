//! Comparing a run with an earlier one (`--compare OLD`): for each row present in both, the
//! change of memvisor's figure and of its speedup over each peer.
//!
//! Figures measured in different runs are not comparable on a shared, noisy machine; ratios
//! measured within one run are. So the comparison leads with the speedups (each measured side
//! by side in its own run) and shows the raw figures' change as a hint only.
//!
//! ```
//! use memvisor_bench::compare::compare;
//! use memvisor_bench::report::{Better, GroupReport, Row};
//!
//! let row = |memvisor: f64| {
//!     let mut row = Row::new("id_churn", 1000, "ns/op", Better::Lower);
//!     row.memvisor = Some(memvisor);
//!     row.peers.insert("vm-allocator".to_owned(), Some(40.0));
//!     row
//! };
//! let old = GroupReport::new("resources", true, vec![row(20.0)]);
//! let new = GroupReport::new("resources", true, vec![row(10.0)]);
//! let text = compare(&old, &new);
//! assert!(text.contains("id_churn"));
//! assert!(text.contains("2.00x → 4.00x"));
//! assert!(text.contains("-50.0%"));
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::BenchError;
use crate::report::{GroupReport, Row, format_speedup, human};

/// Reads the earlier report of `group` from `old`: the file itself if `old` is a JSON file of
/// that group, or `old/GROUP.json` if `old` is a folder. `Ok(None)` if there is none for the
/// group (a file of another group, or a folder without it).
///
/// # Errors
///
/// [`BenchError::Io`] if the file exists but cannot be read; [`BenchError::Json`] if it is not
/// a report.
pub fn load_old(old: &Path, group: &str) -> Result<Option<GroupReport>, BenchError> {
    let path: PathBuf = if old.is_dir() {
        old.join(format!("{group}.json"))
    } else {
        old.to_owned()
    };
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|source| BenchError::Io {
        path: path.clone(),
        source,
    })?;
    let report = GroupReport::from_json(&text)?;
    Ok((report.group == group).then_some(report))
}

/// The comparison table of `new` against `old`: one line per row of `new` that `old` also has
/// (same scenario and param), with memvisor's old and new figure, the change in percent, and for
/// each peer measured both times memvisor's speedup then and now (`old → new`).
#[must_use]
pub fn compare(old: &GroupReport, new: &GroupReport) -> String {
    let mut out = format!("== {}: change against the earlier run ==\n", new.group);
    let mut matched = 0usize;
    for row in &new.results {
        let Some(before) = old
            .results
            .iter()
            .find(|r| r.scenario == row.scenario && r.param == row.param)
        else {
            continue;
        };
        matched += 1;
        let _ = write!(
            out,
            "{} {}: memvisor {} → {}",
            row.scenario,
            row.param,
            figure(before, before.memvisor),
            figure(row, row.memvisor)
        );
        if let (Some(a), Some(b)) = (before.memvisor, row.memvisor)
            && a != 0.0
        {
            let _ = write!(out, " ({:+.1}%)", (b - a) / a * 100.0);
        }
        for peer in row.peers.keys() {
            if let (Some(a), Some(b)) = (before.speedup(peer), row.speedup(peer)) {
                let _ = write!(
                    out,
                    "; × {peer} {} → {}",
                    format_speedup(a),
                    format_speedup(b)
                );
            }
        }
        out.push('\n');
    }
    if matched == 0 {
        out.push_str("(no row in common)\n");
    }
    out
}

fn figure(row: &Row, value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| human(v, &row.unit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Better;

    fn report(group: &str, memvisor: f64) -> GroupReport {
        let mut row = Row::new("s", 1, "ns/op", Better::Lower);
        row.memvisor = Some(memvisor);
        row.peers.insert("p".to_owned(), Some(8.0));
        GroupReport::new(group, true, vec![row])
    }

    #[test]
    fn compare_row_in_both_shows_figures_change_and_speedups() {
        let text = compare(&report("g", 4.0), &report("g", 2.0));
        assert!(
            text.contains("s 1: memvisor 4.00 ns/op → 2.00 ns/op (-50.0%)"),
            "{text}"
        );
        assert!(text.contains("× p 2.00x → 4.00x"), "{text}");
    }

    #[test]
    fn compare_no_common_row_says_so() {
        let mut other = report("g", 1.0);
        other.results[0].param = 99;
        assert!(compare(&report("g", 1.0), &other).contains("no row in common"));
    }

    #[test]
    fn load_old_from_folder_and_file() {
        let dir =
            std::env::temp_dir().join(format!("memvisor-bench-compare-{}", std::process::id()));
        let path = report("g", 3.0).write_json(&dir).unwrap();
        assert_eq!(
            load_old(&dir, "g").unwrap().unwrap().results[0].memvisor,
            Some(3.0)
        );
        assert_eq!(load_old(&path, "g").unwrap().unwrap().group, "g");
        assert!(load_old(&path, "other").unwrap().is_none());
        assert!(load_old(&dir, "other").unwrap().is_none());
        std::fs::write(dir.join("bad.json"), "{").unwrap();
        assert!(matches!(
            load_old(&dir.join("bad.json"), "g"),
            Err(BenchError::Json(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

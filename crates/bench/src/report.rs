//! Report rows, the per-group JSON file, the printed table and human-readable units.
//!
//! # Rows
//!
//! A [`Row`] is one scenario at one parameter:
//!
//! ```text
//! {scenario, param, unit, better: lower|higher, memvisor: f64|null,
//!  peers: {name: f64|null}, notes: {name: reason}}
//! ```
//!
//! Groups normally get rows from [`Scenario::run`](crate::harness::Scenario::run); build one by
//! hand with [`Row::new`] for a figure that is not a timing loop (a byte count read once, say).
//! A `null` figure always has a note saying why.
//!
//! # Files
//!
//! A [`GroupReport`] holds a group's rows. [`GroupReport::write_json`] writes `GROUP.json` in the
//! form BENCH.md gives (`notes` is left out of a row when empty), [`GroupReport::write_plots`]
//! one `GROUP_SCENARIO.svg` per scenario measured at more than one parameter, and
//! [`GroupReport::table`] renders the table the command line prints. The default folder is
//! [`default_out_dir`], `target/memvisor-bench` of the workspace.
//!
//! # Speedup
//!
//! [`speedup`] is peer ÷ memvisor where lower is better and memvisor ÷ peer where higher is
//! better, so above 1 always means memvisor wins.
//!
//! ```
//! use memvisor_bench::report::{Better, GroupReport, Row};
//!
//! let mut row = Row::new("addr_fill", 10_000, "ms", Better::Lower);
//! row.memvisor = Some(2.0);
//! row.peers.insert("vm-allocator".to_owned(), Some(30.0));
//! assert_eq!(row.speedup("vm-allocator"), Some(15.0));
//!
//! let report = GroupReport::new("resources", true, vec![row]);
//! let table = report.table();
//! assert!(table.contains("addr_fill"));
//! assert!(table.contains("15.0x"));
//! let back = GroupReport::from_json(&report.to_json()).unwrap();
//! assert_eq!(back, report);
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::{env, fs};

use serde::{Deserialize, Serialize};

use crate::BenchError;
use crate::harness::MEMVISOR;

/// Which direction of a figure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    /// Smaller is better: times, bytes.
    Lower,
    /// Larger is better: throughput, percentages, counts of successes.
    Higher,
}

/// One scenario at one parameter: memvisor's figure and each peer's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Scenario name, as listed in BENCH.md (e.g. `addr_alloc_free_first`).
    pub scenario: String,
    /// The size the scenario scales with; `0` where there is none.
    pub param: u64,
    /// Unit of every figure in the row (`ns/op`, `ms`, `bytes`, `%`, …).
    pub unit: String,
    /// Which direction is better.
    pub better: Better,
    /// memvisor's figure; `None` (JSON `null`) if it could not be measured, with a note under
    /// `"memvisor"`.
    pub memvisor: Option<f64>,
    /// Each peer's figure by name; `None` (JSON `null`) if the peer cannot do the scenario, with a
    /// note under its name.
    pub peers: BTreeMap<String, Option<f64>>,
    /// memvisor's own variants (another mode, another thread count) by name: memvisor code, so
    /// never a peer and never in a speedup. Omitted from the JSON when empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variants: BTreeMap<String, Option<f64>>,
    /// Why a figure is missing, or how a present one was obtained when that is not the usual way
    /// (a reused sample, say), by contender name. Omitted from the JSON when empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub notes: BTreeMap<String, String>,
}

impl Row {
    /// An empty row: no memvisor figure, no peers, no notes.
    #[must_use]
    pub fn new(scenario: &str, param: u64, unit: &str, better: Better) -> Self {
        Self {
            scenario: scenario.to_owned(),
            param,
            unit: unit.to_owned(),
            better,
            memvisor: None,
            peers: BTreeMap::new(),
            variants: BTreeMap::new(),
            notes: BTreeMap::new(),
        }
    }

    /// memvisor's speedup over `peer` (see [`speedup`]); `None` if either figure is missing or the
    /// ratio is not finite.
    #[must_use]
    pub fn speedup(&self, peer: &str) -> Option<f64> {
        let theirs = self.peers.get(peer).copied().flatten()?;
        speedup(self.better, self.memvisor?, theirs)
    }

    /// A one-line summary: scenario, param, then every contender's figure in human units.
    ///
    /// # Examples
    ///
    /// ```
    /// use memvisor_bench::report::{Better, Row};
    ///
    /// let mut row = Row::new("push_1t", 10, "ns/op", Better::Lower);
    /// row.memvisor = Some(1500.0);
    /// row.peers.insert("std-vec".to_owned(), None);
    /// assert_eq!(row.summary(), "push_1t 10: memvisor 1.50 µs/op, std-vec n/a");
    /// ```
    #[must_use]
    pub fn summary(&self) -> String {
        let mut line = format!(
            "{} {}: {MEMVISOR} {}",
            self.scenario,
            self.param,
            self.cell(self.memvisor)
        );
        for (name, value) in &self.variants {
            let _ = write!(line, ", {name} {}", self.cell(*value));
        }
        for (name, value) in &self.peers {
            let _ = write!(line, ", {name} {}", self.cell(*value));
        }
        line
    }

    /// `value` in this row's unit, human-readable, or `n/a`.
    fn cell(&self, value: Option<f64>) -> String {
        value.map_or_else(|| "n/a".to_owned(), |v| human(v, &self.unit))
    }
}

/// memvisor's speedup over a peer: `peer / memvisor` where lower is better, `memvisor / peer`
/// where higher is better, so above 1 means memvisor wins. `None` if the ratio is not finite
/// (a zero divisor, say).
///
/// # Examples
///
/// ```
/// use memvisor_bench::report::{Better, speedup};
///
/// assert_eq!(speedup(Better::Lower, 2.0, 6.0), Some(3.0)); // memvisor takes a third of the time
/// assert_eq!(speedup(Better::Higher, 90.0, 45.0), Some(2.0)); // memvisor fills twice as much
/// assert_eq!(speedup(Better::Lower, 0.0, 1.0), None);
/// ```
#[must_use]
pub fn speedup(better: Better, memvisor: f64, peer: f64) -> Option<f64> {
    let ratio = match better {
        Better::Lower => peer / memvisor,
        Better::Higher => memvisor / peer,
    };
    ratio.is_finite().then_some(ratio)
}

/// The results of one group: what `GROUP.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupReport {
    /// Group name (`vmem`, `vec`, `resources`, …).
    pub group: String,
    /// Whether the figures come from a quick run.
    pub quick: bool,
    /// One row per scenario and parameter, in the order measured.
    pub results: Vec<Row>,
}

impl GroupReport {
    /// A report for `group`.
    #[must_use]
    pub fn new(group: &str, quick: bool, results: Vec<Row>) -> Self {
        Self {
            group: group.to_owned(),
            quick,
            results,
        }
    }

    /// The report as pretty-printed JSON, in the form BENCH.md gives.
    #[must_use]
    pub fn to_json(&self) -> String {
        // Serializing plain strings, numbers and string-keyed maps cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Parses a report written by [`to_json`](Self::to_json).
    ///
    /// # Errors
    ///
    /// [`BenchError::Json`] if `text` is not a report in that form.
    pub fn from_json(text: &str) -> Result<Self, BenchError> {
        serde_json::from_str(text).map_err(BenchError::Json)
    }

    /// Where [`write_json`](Self::write_json) puts the report: `dir/GROUP.json`.
    #[must_use]
    pub fn json_path(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.json", self.group))
    }

    /// Writes the report to `dir/GROUP.json`, creating `dir` if needed, and returns the path.
    ///
    /// # Errors
    ///
    /// [`BenchError::Io`] if the folder cannot be created or the file written.
    pub fn write_json(&self, dir: &Path) -> Result<PathBuf, BenchError> {
        fs::create_dir_all(dir).map_err(|source| BenchError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let path = self.json_path(dir);
        let mut text = self.to_json();
        text.push('\n');
        fs::write(&path, text).map_err(|source| BenchError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }

    /// Writes one SVG plot per scenario measured at more than one parameter, as
    /// `dir/GROUP_SCENARIO.svg`, and returns their paths. See [`crate::plot`].
    ///
    /// # Errors
    ///
    /// [`BenchError::Io`] if the folder cannot be created; [`BenchError::Plot`] if a plot cannot
    /// be drawn or written.
    pub fn write_plots(&self, dir: &Path) -> Result<Vec<PathBuf>, BenchError> {
        crate::plot::write_plots(self, dir)
    }

    /// Every variant name appearing in the report, sorted.
    #[must_use]
    pub fn variant_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .results
            .iter()
            .flat_map(|row| row.variants.keys().cloned())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Every peer name appearing in the report, sorted.
    #[must_use]
    pub fn peer_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .results
            .iter()
            .flat_map(|row| row.peers.keys().cloned())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The table the command line prints: a title line, then one line per row with scenario,
    /// param, memvisor's figure, each of memvisor's variants (no speedup: they are memvisor),
    /// then for each peer its figure and memvisor's speedup over it (`×` columns; above 1 means
    /// memvisor wins). A missing figure shows as `n/a [k]`, where note `k` under the table gives
    /// the reason; a present figure with a note (a reused sample, say) shows as `figure [k]`.
    /// [`SPEEDUP_LEGEND`] ends a table with peers.
    ///
    /// # Examples
    ///
    /// ```
    /// use memvisor_bench::report::{Better, GroupReport, Row};
    ///
    /// let mut row = Row::new("fill_percent", 0, "%", Better::Higher);
    /// row.memvisor = Some(99.0);
    /// row.peers.insert("talc".to_owned(), None);
    /// row.notes.insert("talc".to_owned(), "panicked: out of memory".to_owned());
    /// let table = GroupReport::new("arena", false, vec![row]).table();
    /// assert!(table.contains("n/a [1]"));
    /// assert!(table.contains("[1] fill_percent 0, talc: panicked: out of memory"));
    /// ```
    #[must_use]
    pub fn table(&self) -> String {
        let peers = self.peer_names();
        let variants = self.variant_names();
        let mut header = vec![
            "scenario".to_owned(),
            "param".to_owned(),
            MEMVISOR.to_owned(),
        ];
        header.extend(variants.iter().cloned());
        for peer in &peers {
            header.push(peer.clone());
            header.push(format!("× {peer}"));
        }
        let mut notes: Vec<String> = Vec::new();
        let mut lines: Vec<Vec<String>> = Vec::new();
        for row in &self.results {
            let mut note_cell = |name: &str, value: Option<f64>| -> String {
                let figure = value.map_or_else(|| "n/a".to_owned(), |v| human(v, &row.unit));
                match row.notes.get(name) {
                    Some(reason) => {
                        notes.push(format!("{} {}, {name}: {reason}", row.scenario, row.param));
                        format!("{figure} [{}]", notes.len())
                    }
                    None => figure,
                }
            };
            let mut line = vec![
                row.scenario.clone(),
                row.param.to_string(),
                note_cell(MEMVISOR, row.memvisor),
            ];
            for variant in &variants {
                match row.variants.get(variant) {
                    Some(value) => line.push(note_cell(variant, *value)),
                    None => line.push(String::new()),
                }
            }
            for peer in &peers {
                match row.peers.get(peer) {
                    Some(value) => {
                        line.push(note_cell(peer, *value));
                        line.push(
                            row.speedup(peer)
                                .map_or_else(|| "-".to_owned(), format_speedup),
                        );
                    }
                    None => {
                        line.push(String::new());
                        line.push(String::new());
                    }
                }
            }
            lines.push(line);
        }
        let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for line in &lines {
            for (width, cell) in widths.iter_mut().zip(line) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mode = if self.quick { "quick" } else { "full" };
        let mut out = format!("== {} ({mode}) ==\n", self.group);
        push_line(&mut out, &header, &widths);
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        push_line(&mut out, &rule, &widths);
        for line in &lines {
            push_line(&mut out, line, &widths);
        }
        for (index, note) in notes.iter().enumerate() {
            let _ = writeln!(out, "[{}] {note}", index + 1);
        }
        if !peers.is_empty() {
            out.push_str(SPEEDUP_LEGEND);
            out.push('\n');
        }
        out
    }
}

/// The line under every table that has peers, explaining the `×` columns.
pub const SPEEDUP_LEGEND: &str =
    "× peer: memvisor's speedup over the peer (above 1: memvisor wins)";

/// Appends one table line: first column left-aligned, the rest right-aligned.
fn push_line(out: &mut String, cells: &[String], widths: &[usize]) {
    let mut line = String::new();
    for (index, (cell, width)) in cells.iter().zip(widths).enumerate() {
        let pad = width.saturating_sub(cell.chars().count());
        if index > 0 {
            line.push_str("  ");
        }
        if index == 0 {
            line.push_str(cell);
            line.push_str(&" ".repeat(pad));
        } else {
            line.push_str(&" ".repeat(pad));
            line.push_str(cell);
        }
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

/// A speedup with two, one or no decimals depending on size, and an `x`: `1.23x`, `45.6x`,
/// `789x`.
#[must_use]
pub fn format_speedup(ratio: f64) -> String {
    format!("{}x", significant(ratio))
}

/// Three significant figures for ordinary magnitudes: `1.23`, `45.6`, `789`, `12345`.
fn significant(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 0.01 {
        format!("{v:.2}")
    } else {
        format!("{v:.2e}")
    }
}

/// `value` in `unit`, scaled to a human-readable unit.
///
/// - Times (`ns…`, `µs…`/`us…`, `ms…`, `s…`, keeping any suffix such as `/op`): ns, µs, ms or s.
/// - Bytes (`bytes…` or `B…`): B, KiB, MiB, GiB, TiB.
/// - `%`: one decimal.
/// - Anything else: three significant figures (whole numbers as they are) and the unit.
///
/// # Examples
///
/// ```
/// use memvisor_bench::report::human;
///
/// assert_eq!(human(812.0, "ns/op"), "812 ns/op");
/// assert_eq!(human(2_700_000.0, "ns/op"), "2.70 ms/op");
/// assert_eq!(human(1500.0, "ms"), "1.50 s");
/// assert_eq!(human(8.0, "bytes/element"), "8.00 B/element");
/// assert_eq!(human(3.0 * 1024.0 * 1024.0, "bytes"), "3.00 MiB");
/// assert_eq!(human(99.25, "%"), "99.2%");
/// assert_eq!(human(50_000.0, "commits"), "50000 commits");
/// ```
#[must_use]
pub fn human(value: f64, unit: &str) -> String {
    for (prefix, ns) in [
        ("ns", 1.0),
        ("µs", 1e3),
        ("us", 1e3),
        ("ms", 1e6),
        ("s", 1e9),
    ] {
        if let Some(suffix) = unit.strip_prefix(prefix)
            && (suffix.is_empty() || suffix.starts_with('/'))
        {
            return human_time(value * ns, suffix);
        }
    }
    for prefix in ["bytes", "B"] {
        if let Some(suffix) = unit.strip_prefix(prefix)
            && (suffix.is_empty() || suffix.starts_with('/'))
        {
            return human_bytes(value, suffix);
        }
    }
    if unit == "%" {
        return format!("{value:.1}%");
    }
    let number = if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        significant(value)
    };
    if unit.is_empty() {
        number
    } else {
        format!("{number} {unit}")
    }
}

/// `ns` nanoseconds in the largest time unit that keeps the number at or above 1.
fn human_time(ns: f64, suffix: &str) -> String {
    let (scaled, name) = if ns.abs() >= 1e9 {
        (ns / 1e9, "s")
    } else if ns.abs() >= 1e6 {
        (ns / 1e6, "ms")
    } else if ns.abs() >= 1e3 {
        (ns / 1e3, "µs")
    } else {
        (ns, "ns")
    };
    format!("{} {name}{suffix}", significant(scaled))
}

/// `bytes` in the largest binary unit that keeps the number at or above 1.
fn human_bytes(bytes: f64, suffix: &str) -> String {
    let mut scaled = bytes;
    let mut name = "B";
    for next in ["KiB", "MiB", "GiB", "TiB"] {
        if scaled.abs() < 1024.0 {
            break;
        }
        scaled /= 1024.0;
        name = next;
    }
    format!("{} {name}{suffix}", significant(scaled))
}

/// The default output folder: `memvisor-bench` inside the workspace's target folder.
///
/// The target folder is `$CARGO_TARGET_DIR` if set at run time (relative paths taken from the
/// workspace root), else `target` in the workspace root: the nearest folder above this crate
/// whose `Cargo.toml` has a `[workspace]` table (this crate's folder if none has).
#[must_use]
pub fn default_out_dir() -> PathBuf {
    let root = workspace_root(Path::new(env!("CARGO_MANIFEST_DIR")));
    let target = match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    };
    target.join("memvisor-bench")
}

/// The nearest ancestor of `manifest_dir` (itself included) whose `Cargo.toml` declares a
/// workspace, or `manifest_dir` if none does.
fn workspace_root(manifest_dir: &Path) -> PathBuf {
    manifest_dir
        .ancestors()
        .find(|dir| {
            fs::read_to_string(dir.join("Cargo.toml"))
                .is_ok_and(|text| text.lines().any(|line| line.trim() == "[workspace]"))
        })
        .unwrap_or(manifest_dir)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn sample_row() -> Row {
        let mut row = Row::new("addr_alloc_free_first", 100_000, "ns/op", Better::Lower);
        row.memvisor = Some(812.0);
        row.peers
            .insert("vm-allocator".to_owned(), Some(2_700_000.0));
        row
    }

    #[test]
    fn speedup_lower_better_is_peer_over_memvisor() {
        assert_eq!(speedup(Better::Lower, 10.0, 40.0), Some(4.0));
        assert_eq!(speedup(Better::Lower, 40.0, 10.0), Some(0.25));
    }

    #[test]
    fn speedup_higher_better_is_memvisor_over_peer() {
        assert_eq!(speedup(Better::Higher, 40.0, 10.0), Some(4.0));
        assert_eq!(speedup(Better::Higher, 10.0, 40.0), Some(0.25));
    }

    #[test]
    fn speedup_zero_divisor_is_none() {
        assert_eq!(speedup(Better::Lower, 0.0, 5.0), None);
        assert_eq!(speedup(Better::Higher, 5.0, 0.0), None);
    }

    #[test]
    fn row_speedup_missing_figure_is_none() {
        let mut row = sample_row();
        row.peers.insert("talc".to_owned(), None);
        assert_eq!(row.speedup("talc"), None);
        assert_eq!(row.speedup("absent"), None);
        row.memvisor = None;
        assert_eq!(row.speedup("vm-allocator"), None);
    }

    #[test]
    fn to_json_has_bench_md_shape() {
        let mut failing = Row::new("id_churn", 1000, "ns/op", Better::Lower);
        failing.peers.insert("vm-allocator".to_owned(), None);
        failing
            .notes
            .insert("vm-allocator".to_owned(), "panicked: overflow".to_owned());
        failing
            .notes
            .insert(MEMVISOR.to_owned(), "not measured".to_owned());
        let report = GroupReport::new("resources", true, vec![sample_row(), failing]);

        let value: Value = serde_json::from_str(&report.to_json()).unwrap();
        let top = value.as_object().unwrap();
        let mut keys: Vec<&str> = top.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["group", "quick", "results"]);
        assert_eq!(value["group"], "resources");
        assert_eq!(value["quick"], true);

        let first = value["results"][0].as_object().unwrap();
        let mut keys: Vec<&str> = first.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["better", "memvisor", "param", "peers", "scenario", "unit"]
        );
        assert_eq!(first["scenario"], "addr_alloc_free_first");
        assert_eq!(first["param"], 100_000);
        assert_eq!(first["unit"], "ns/op");
        assert_eq!(first["better"], "lower");
        assert_eq!(first["memvisor"], 812.0);
        assert_eq!(first["peers"]["vm-allocator"], 2_700_000.0);

        let second = &value["results"][1];
        assert!(second["memvisor"].is_null());
        assert!(second["peers"]["vm-allocator"].is_null());
        assert_eq!(second["notes"]["vm-allocator"], "panicked: overflow");
        assert_eq!(second["notes"][MEMVISOR], "not measured");
    }

    #[test]
    fn from_json_round_trips() {
        let report = GroupReport::new("vec", false, vec![sample_row()]);
        assert_eq!(GroupReport::from_json(&report.to_json()).unwrap(), report);
    }

    #[test]
    fn from_json_bench_md_example_parses() {
        let text = r#"{
          "group": "resources",
          "quick": true,
          "results": [
            {"scenario": "addr_alloc_free_first", "param": 100000, "unit": "ns/op", "better": "lower",
             "memvisor": 812.0, "peers": {"vm-allocator": 2700000.0}}
          ]
        }"#;
        let report = GroupReport::from_json(text).unwrap();
        assert_eq!(
            report,
            GroupReport::new("resources", true, vec![sample_row()])
        );
    }

    #[test]
    fn from_json_bad_better_is_error() {
        let text = r#"{"group": "g", "quick": false, "results": [{"scenario": "s", "param": 0,
            "unit": "ms", "better": "sideways", "memvisor": 1.0, "peers": {}}]}"#;
        let error = GroupReport::from_json(text).unwrap_err();
        assert!(matches!(error, BenchError::Json(_)));
        assert!(
            error
                .to_string()
                .starts_with("malformed report JSON: unknown variant `sideways`")
        );
    }

    #[test]
    fn table_null_peer_with_note_shows_numbered_reason() {
        let mut row = sample_row();
        row.peers.insert("talc".to_owned(), None);
        row.notes
            .insert("talc".to_owned(), "lacks the operation".to_owned());
        let table = GroupReport::new("resources", true, vec![row]).table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "== resources (quick) ==");
        assert!(lines[1].starts_with("scenario"));
        assert!(lines[1].contains("× talc"));
        assert!(lines[1].contains("× vm-allocator"));
        assert!(lines[3].contains("812 ns/op"));
        assert!(lines[3].contains("2.70 ms/op"));
        assert!(lines[3].contains("3325x"));
        assert!(lines[3].contains("n/a [1]"));
        assert_eq!(
            lines[4],
            "[1] addr_alloc_free_first 100000, talc: lacks the operation"
        );
        assert_eq!(lines[5], SPEEDUP_LEGEND);
        assert_eq!(lines.len(), 6);
    }

    #[test]
    fn table_null_memvisor_shows_note_and_no_speedup() {
        let mut row = sample_row();
        row.memvisor = None;
        row.notes
            .insert(MEMVISOR.to_owned(), "mmap failed".to_owned());
        let table = GroupReport::new("g", false, vec![row]).table();
        let data = table.lines().nth(3).unwrap();
        assert!(data.contains("n/a [1]"));
        assert!(data.trim_end().ends_with('-'));
        assert!(table.contains("[1] addr_alloc_free_first 100000, memvisor: mmap failed"));
    }

    #[test]
    fn table_without_peers_has_no_speedup_legend() {
        let mut row = Row::new("owns", 10_000, "ns/op", Better::Lower);
        row.memvisor = Some(3.0);
        let table = GroupReport::new("arena", false, vec![row]).table();
        assert!(!table.contains(SPEEDUP_LEGEND));
        assert_eq!(table.lines().count(), 4);
    }

    #[test]
    fn table_row_without_some_peer_leaves_cells_blank() {
        let mut other = Row::new("owns", 10_000, "ns/op", Better::Lower);
        other.memvisor = Some(3.0);
        let table = GroupReport::new("arena", false, vec![sample_row(), other]).table();
        let data = table.lines().nth(4).unwrap();
        assert!(data.starts_with("owns"));
        assert!(data.ends_with("3.00 ns/op"));
    }

    #[test]
    fn table_columns_are_aligned() {
        let mut short = Row::new("a", 1, "ns/op", Better::Lower);
        short.memvisor = Some(1.0);
        short.peers.insert("vm-allocator".to_owned(), Some(2.0));
        let table = GroupReport::new("g", false, vec![sample_row(), short]).table();
        let lines: Vec<&str> = table.lines().skip(1).take(4).collect();
        let widths: Vec<usize> = lines.iter().map(|l| l.chars().count()).collect();
        assert!(widths.iter().all(|w| *w == widths[0]), "{table}");
    }

    #[test]
    fn human_time_units_scale() {
        assert_eq!(human(0.5, "ns/op"), "0.50 ns/op");
        assert_eq!(human(1_234.0, "ns"), "1.23 µs");
        assert_eq!(human(12_500_000_000.0, "ns/op"), "12.5 s/op");
        assert_eq!(human(0.25, "ms"), "250 µs");
        assert_eq!(human(2.0, "s"), "2.00 s");
    }

    #[test]
    fn human_bytes_units_scale() {
        assert_eq!(human(512.0, "bytes"), "512 B");
        assert_eq!(human(1536.0, "bytes"), "1.50 KiB");
        assert_eq!(human(1024.0 * 1024.0 * 1024.0, "B"), "1.00 GiB");
    }

    #[test]
    fn human_other_units_keep_unit() {
        assert_eq!(human(12.0, ""), "12");
        assert_eq!(human(1.5, "x"), "1.50 x");
        assert_eq!(human(3.0, "slots"), "3 slots");
    }

    #[test]
    fn format_speedup_uses_three_significant_figures() {
        assert_eq!(format_speedup(1.234), "1.23x");
        assert_eq!(format_speedup(45.67), "45.7x");
        assert_eq!(format_speedup(3324.9), "3325x");
    }

    #[test]
    fn workspace_root_finds_workspace_manifest() {
        let root = workspace_root(Path::new(env!("CARGO_MANIFEST_DIR")));
        let manifest = fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"));
        assert!(Path::new(env!("CARGO_MANIFEST_DIR")).starts_with(&root));
    }

    #[test]
    fn write_json_creates_file_in_dir() {
        let dir = env::temp_dir().join(format!("memvisor-bench-json-{}", std::process::id()));
        let report = GroupReport::new("unit", false, vec![sample_row()]);
        let path = report.write_json(&dir).unwrap();
        assert_eq!(path, dir.join("unit.json"));
        let back = GroupReport::from_json(&fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back, report);
        fs::remove_dir_all(&dir).unwrap();
    }
}

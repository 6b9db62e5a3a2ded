//! The one-page summary of every group: `summary.html` in the output folder, made from every
//! `GROUP.json` there (so groups run separately still end up on one page), each group's table
//! as the command line prints it, then its plots.
//!
//! ```
//! use memvisor_bench::report::{Better, GroupReport, Row};
//! use memvisor_bench::summary::summary_html;
//!
//! let mut row = Row::new("owns", 10000, "ns/op", Better::Lower);
//! row.memvisor = Some(1.5);
//! let html = summary_html(&[GroupReport::new("arena", true, vec![row])], &[]);
//! assert!(html.starts_with("<!DOCTYPE html>"));
//! assert!(html.contains("<h2 id=\"arena\">arena</h2>"));
//! ```

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use crate::BenchError;
use crate::report::GroupReport;

/// Reads every report (`*.json`) in `dir`, sorted by group name; files that are not reports are
/// skipped.
///
/// # Errors
///
/// [`BenchError::Io`] if the folder cannot be listed.
pub fn read_reports(dir: &Path) -> Result<Vec<GroupReport>, BenchError> {
    let io = |source| BenchError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut reports = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|e| e == "json")
            && let Ok(text) = fs::read_to_string(&path)
            && let Ok(report) = GroupReport::from_json(&text)
        {
            reports.push(report);
        }
    }
    reports.sort_by(|a, b| a.group.cmp(&b.group));
    Ok(reports)
}

/// The summary page for `reports`, linking the SVG plots named in `plots` (file names in the
/// same folder) under the group whose name they start with.
#[must_use]
pub fn summary_html(reports: &[GroupReport], plots: &[String]) -> String {
    let mut out = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">\
         <title>memvisor benchmarks</title>\n<style>body{font-family:sans-serif;margin:2em}\
         pre{background:#f6f6f6;padding:1em;overflow-x:auto}img{max-width:48%;margin:0.5%}\
         </style></head>\n<body>\n<h1>memvisor benchmarks</h1>\n<p>Each figure is the median of \
         interleaved repeats of memvisor and its peers in one run; the <code>×</code> columns are \
         memvisor's speedup (above 1: memvisor wins). Variants are memvisor's own code and have \
         no speedup.</p>\n<ul>\n",
    );
    for report in reports {
        let _ = writeln!(
            out,
            "<li><a href=\"#{0}\">{0}</a>{1}</li>",
            escape(&report.group),
            if report.quick { " (quick)" } else { "" }
        );
    }
    out.push_str("</ul>\n");
    for report in reports {
        let _ = writeln!(
            out,
            "<h2 id=\"{0}\">{0}</h2>\n<pre>{1}</pre>",
            escape(&report.group),
            escape(&report.table())
        );
        let prefix = format!("{}_", report.group);
        for plot in plots.iter().filter(|p| p.starts_with(&prefix)) {
            let _ = writeln!(out, "<img src=\"{0}\" alt=\"{0}\">", escape(plot));
        }
    }
    out.push_str("</body>\n</html>\n");
    out
}

/// Writes `dir/summary.html` from every report and plot in `dir` and returns its path.
///
/// # Errors
///
/// [`BenchError::Io`] if the folder cannot be read or the file written.
pub fn write_summary(dir: &Path) -> Result<PathBuf, BenchError> {
    let reports = read_reports(dir)?;
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| BenchError::Io { path, source }
    };
    let mut plots: Vec<String> = fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| name.ends_with(".svg"))
        .collect();
    plots.sort();
    let path = dir.join("summary.html");
    fs::write(&path, summary_html(&reports, &plots)).map_err(io(&path))?;
    Ok(path)
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Better, Row};

    #[test]
    fn summary_html_escapes_and_links_plots_by_group() {
        let mut row = Row::new("a<b", 1, "ns/op", Better::Lower);
        row.memvisor = Some(1.0);
        let html = summary_html(
            &[GroupReport::new("vec", false, vec![row])],
            &["vec_push_1t.svg".to_owned(), "vmem_x.svg".to_owned()],
        );
        assert!(html.contains("a&lt;b"));
        assert!(html.contains("<img src=\"vec_push_1t.svg\""));
        assert!(!html.contains("vmem_x.svg"));
    }

    #[test]
    fn write_summary_collects_every_report_in_folder() {
        let dir =
            std::env::temp_dir().join(format!("memvisor-bench-summary-{}", std::process::id()));
        for group in ["vmem", "arena"] {
            let mut row = Row::new("s", 1, "ms", Better::Lower);
            row.memvisor = Some(2.0);
            GroupReport::new(group, true, vec![row])
                .write_json(&dir)
                .unwrap();
        }
        fs::write(dir.join("notes.json"), "not a report").unwrap();
        let path = write_summary(&dir).unwrap();
        let html = fs::read_to_string(path).unwrap();
        let arena = html.find("id=\"arena\"").unwrap();
        let vmem = html.find("id=\"vmem\"").unwrap();
        assert!(arena < vmem);
        fs::remove_dir_all(&dir).unwrap();
    }
}

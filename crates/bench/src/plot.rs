//! SVG plots of scaling scenarios.
//!
//! For every scenario of a [`GroupReport`] measured at more than one parameter,
//! [`write_plots`] draws the figure against the parameter, one line per implementation
//! (memvisor drawn thicker, then each peer; a `null` figure is left out of its line), and writes
//! it to `GROUP_SCENARIO.svg`. The x axis is logarithmic when the parameters span more
//! than a decade; the y axis is logarithmic when the figures span more than two decades (a peer
//! a thousand times slower would otherwise flatten every other line against zero).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use plotters::coord::combinators::IntoLogRange;
use plotters::prelude::*;

use crate::BenchError;
use crate::harness::MEMVISOR;
use crate::report::{GroupReport, Row};

/// Width and height of every plot, in pixels.
const SIZE: (u32, u32) = (900, 540);

/// One line of a plot: an implementation's (param, figure) points, sorted by param.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// `memvisor` or the peer's name.
    pub name: String,
    /// The points that have a figure, by increasing param.
    pub points: Vec<(f64, f64)>,
}

/// The scenarios of `report` measured at more than one distinct parameter, in order of first
/// appearance.
#[must_use]
pub fn scaling_scenarios(report: &GroupReport) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    for row in &report.results {
        if !order.contains(&row.scenario) {
            order.push(row.scenario.clone());
        }
    }
    order.retain(|scenario| {
        let params: BTreeSet<u64> = rows_of(report, scenario).map(|row| row.param).collect();
        params.len() > 1
    });
    order
}

/// The lines a plot of `scenario` shows: memvisor first, then each peer by name; an
/// implementation with no figure at all is left out.
#[must_use]
pub fn series(report: &GroupReport, scenario: &str) -> Vec<Series> {
    let mut names = vec![MEMVISOR.to_owned()];
    let peers: BTreeSet<&String> = rows_of(report, scenario)
        .flat_map(|row| row.peers.keys())
        .collect();
    names.extend(peers.into_iter().cloned());
    names
        .into_iter()
        .filter_map(|name| {
            let mut points: Vec<(f64, f64)> = rows_of(report, scenario)
                .filter_map(|row| {
                    let value = if name == MEMVISOR {
                        row.memvisor
                    } else {
                        row.peers.get(&name).copied().flatten()
                    };
                    value.map(|v| (row.param as f64, v))
                })
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            (!points.is_empty()).then_some(Series { name, points })
        })
        .collect()
}

/// The file a plot of `scenario` goes to: `dir/GROUP_SCENARIO.svg`, with characters other than
/// ASCII letters, digits, `-` and `_` replaced by `_`.
#[must_use]
pub fn plot_path(dir: &Path, group: &str, scenario: &str) -> PathBuf {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    dir.join(format!("{}_{}.svg", clean(group), clean(scenario)))
}

/// Writes one SVG per scaling scenario of `report` into `dir` (created if needed) and returns
/// the paths written. A scenario with no figure at all gets no plot.
///
/// # Errors
///
/// [`BenchError::Io`] if `dir` cannot be created; [`BenchError::Plot`] if drawing or writing a
/// plot fails.
pub fn write_plots(report: &GroupReport, dir: &Path) -> Result<Vec<PathBuf>, BenchError> {
    let scenarios = scaling_scenarios(report);
    if scenarios.is_empty() {
        return Ok(Vec::new());
    }
    fs::create_dir_all(dir).map_err(|source| BenchError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut written = Vec::new();
    for scenario in scenarios {
        let lines = series(report, &scenario);
        if lines.is_empty() {
            continue;
        }
        let unit = rows_of(report, &scenario)
            .next()
            .map_or("", |row| row.unit.as_str());
        let path = plot_path(dir, &report.group, &scenario);
        let title = format!("{}: {scenario}", report.group);
        draw(&path, &title, unit, &lines).map_err(|reason| BenchError::Plot {
            path: path.clone(),
            reason,
        })?;
        written.push(path);
    }
    Ok(written)
}

/// The rows of `report` for `scenario`.
fn rows_of<'r>(report: &'r GroupReport, scenario: &'r str) -> impl Iterator<Item = &'r Row> {
    report
        .results
        .iter()
        .filter(move |row| row.scenario == scenario)
}

/// The smallest and largest of `values`.
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

/// Draws `lines` into an SVG file at `path`.
fn draw(path: &Path, title: &str, unit: &str, lines: &[Series]) -> Result<(), String> {
    let (x_lo, x_hi) = bounds(lines.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
    let (y_lo, y_hi) = bounds(lines.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
    let log_x = x_lo > 0.0 && x_hi / x_lo > 10.0;
    let log_y = y_lo > 0.0 && y_hi / y_lo > 100.0;
    let (x_lo, x_hi) = if log_x {
        (x_lo / 1.2, x_hi * 1.2)
    } else {
        pad(x_lo, x_hi)
    };
    // The legend sits in the upper left: keep the top of the plot free of data for it, one
    // twentieth of the height per line.
    let legend = (0.05 * (lines.len() as f64 + 1.0)).min(0.5);
    let y_range = if log_y {
        let (lo, hi) = (y_lo / 1.5, y_hi * 1.5);
        (lo, hi * (hi / lo).powf(legend / (1.0 - legend)))
    } else {
        let hi = if y_hi > 0.0 { y_hi * 1.05 } else { 1.0 };
        let lo = y_lo.min(0.0);
        (lo, lo + (hi - lo) / (1.0 - legend))
    };

    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;

    macro_rules! chart {
        ($x:expr, $y:expr) => {{
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 22))
                .margin(16)
                .x_label_area_size(44)
                .y_label_area_size(70)
                .build_cartesian_2d($x, $y)
                .map_err(|e| e.to_string())?;
            chart
                .configure_mesh()
                .x_label_formatter(&|x| axis_label(*x))
                .y_label_formatter(&|y| axis_label(*y))
                .x_desc(if log_x { "param (log scale)" } else { "param" })
                .y_desc(if log_y {
                    format!("{unit} (log scale)")
                } else {
                    unit.to_owned()
                })
                .draw()
                .map_err(|e| e.to_string())?;
            for (index, line) in lines.iter().enumerate() {
                let color = Palette99::pick(index).to_rgba();
                // memvisor's line is drawn thicker so it stands out among the peers.
                let width = if line.name == MEMVISOR { 3 } else { 2 };
                chart
                    .draw_series(LineSeries::new(
                        line.points.iter().copied(),
                        color.stroke_width(width),
                    ))
                    .map_err(|e| e.to_string())?
                    .label(line.name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(
                        line.points
                            .iter()
                            .map(|&point| Circle::new(point, 3, color.filled())),
                    )
                    .map_err(|e| e.to_string())?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(|e| e.to_string())?;
        }};
    }

    match (log_x, log_y) {
        (true, true) => chart!((x_lo..x_hi).log_scale(), (y_range.0..y_range.1).log_scale()),
        (true, false) => chart!((x_lo..x_hi).log_scale(), y_range.0..y_range.1),
        (false, true) => chart!(x_lo..x_hi, (y_range.0..y_range.1).log_scale()),
        (false, false) => chart!(x_lo..x_hi, y_range.0..y_range.1),
    }
    root.present().map_err(|e| e.to_string())
}

/// A tick label: whole numbers below 10 000 as they are (`4`, `1024`), larger ones with an SI
/// suffix and at most two decimals (`10k`, `1.5M`), fractions with up to three decimals
/// (`0.25`), tiny ones in exponent form.
fn axis_label(v: f64) -> String {
    let a = v.abs();
    if a >= 10_000.0 {
        let (scaled, suffix) = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
            .into_iter()
            .find(|(scale, _)| a >= *scale)
            .map_or((v, ""), |(scale, suffix)| (v / scale, suffix));
        format!("{}{suffix}", trim_decimals(&format!("{scaled:.2}")))
    } else if a == 0.0 || a >= 0.001 {
        trim_decimals(&format!("{v:.3}"))
    } else {
        format!("{v:.1e}")
    }
}

/// `text` (a formatted decimal) without trailing zeros after the point, nor a bare point.
fn trim_decimals(text: &str) -> String {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text.to_owned()
    }
}

/// A linear range around `lo..hi` with 5 % margins (a unit range around a single value).
fn pad(lo: f64, hi: f64) -> (f64, f64) {
    let margin = if hi > lo { (hi - lo) * 0.05 } else { 1.0 };
    (lo - margin, hi + margin)
}

#[cfg(test)]
mod tests {
    use std::env;

    use super::*;
    use crate::report::Better;

    fn row(scenario: &str, param: u64, memvisor: Option<f64>, peer: Option<f64>) -> Row {
        let mut row = Row::new(scenario, param, "ns/op", Better::Lower);
        row.memvisor = memvisor;
        row.peers.insert("vm-allocator".to_owned(), peer);
        row
    }

    fn report() -> GroupReport {
        GroupReport::new(
            "resources",
            true,
            vec![
                row("addr_fill", 100_000, Some(3.0), Some(90.0)),
                row("addr_fill", 10_000, Some(2.0), None),
                row("single", 0, Some(1.0), Some(1.0)),
                row("addr_fill", 1_000_000, Some(4.0), Some(900_000.0)),
            ],
        )
    }

    #[test]
    fn scaling_scenarios_skips_single_param() {
        assert_eq!(scaling_scenarios(&report()), ["addr_fill"]);
    }

    #[test]
    fn series_sorted_by_param_and_skips_nulls() {
        let lines = series(&report(), "addr_fill");
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].name, "memvisor");
        assert_eq!(
            lines[0].points,
            [(10_000.0, 2.0), (100_000.0, 3.0), (1_000_000.0, 4.0)]
        );
        assert_eq!(lines[1].name, "vm-allocator");
        assert_eq!(
            lines[1].points,
            [(100_000.0, 90.0), (1_000_000.0, 900_000.0)]
        );
    }

    #[test]
    fn axis_label_formats_compactly() {
        assert_eq!(axis_label(4.0), "4");
        assert_eq!(axis_label(1024.0), "1024");
        assert_eq!(axis_label(2.5), "2.5");
        assert_eq!(axis_label(0.0), "0");
        assert_eq!(axis_label(10_000.0), "10k");
        assert_eq!(axis_label(1_500_000.0), "1.5M");
        assert_eq!(axis_label(2_700_000_000.0), "2.7G");
        assert_eq!(axis_label(0.0001), "1.0e-4");
        assert_eq!(axis_label(-20_000.0), "-20k");
    }

    #[test]
    fn plot_path_replaces_odd_characters() {
        let path = plot_path(Path::new("/out"), "vec", "push 1t/x");
        assert_eq!(path, Path::new("/out/vec_push_1t_x.svg"));
    }

    #[test]
    fn write_plots_writes_one_svg_per_scaling_scenario() {
        let dir = env::temp_dir().join(format!("memvisor-bench-plot-{}", std::process::id()));
        let written = write_plots(&report(), &dir).unwrap();
        assert_eq!(written, [dir.join("resources_addr_fill.svg")]);
        let svg = fs::read_to_string(&written[0]).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("vm-allocator"));
        assert!(svg.contains("memvisor"));
        assert!(svg.contains("log scale"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn write_plots_linear_axes_when_narrow() {
        let dir = env::temp_dir().join(format!("memvisor-bench-lin-{}", std::process::id()));
        let narrow = GroupReport::new(
            "space",
            false,
            vec![
                row("insert", 4, Some(1.0), Some(2.0)),
                row("insert", 8, Some(1.5), Some(2.5)),
            ],
        );
        let written = write_plots(&narrow, &dir).unwrap();
        let svg = fs::read_to_string(&written[0]).unwrap();
        assert!(!svg.contains("log scale"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn write_plots_nothing_to_plot_writes_nothing() {
        let dir = env::temp_dir().join(format!("memvisor-bench-none-{}", std::process::id()));
        let single = GroupReport::new("g", false, vec![row("s", 0, Some(1.0), None)]);
        assert!(write_plots(&single, &dir).unwrap().is_empty());
        assert!(!dir.exists());
    }
}

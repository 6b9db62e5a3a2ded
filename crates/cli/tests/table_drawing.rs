//! Text tables: drawn as `comfy-table` draws them with no borders and two spaces between
//! columns (the renderer the command used before it drew its own), for any cells, and with a
//! number of heap requests that does not grow with the rows beyond the cells themselves.

use memvisor_cli::render::Table;
use memvisor_testkit::counting_heap::{Counting, used_by};
use proptest::prelude::*;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// What `comfy-table` draws for these headers (a `>` at the end aligns the column right) and
/// rows, with the command's escaping and cut already applied to the cells: the reference.
fn comfy(headers: &[&'static str], rows: &[Vec<String>]) -> String {
    let n = headers.len();
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
        .set_header(
            headers
                .iter()
                .map(|h| comfy_table::Cell::new(h.trim_end_matches('>'))),
        );
    for row in rows {
        table
            .add_row((0..n).map(|i| comfy_table::Cell::new(row.get(i).map_or("", String::as_str))));
    }
    for (i, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, if i + 1 == n { 0 } else { 2 }));
        if headers[i].ends_with('>') {
            column.set_cell_alignment(comfy_table::CellAlignment::Right);
        }
    }
    let mut out = String::new();
    for line in table.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Cell text: ASCII, wide (CJK, emoji) and zero-width (combining) characters, spaces and
/// empty cells; no control characters, which the table escapes (checked apart below).
fn cell_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            "a", "Z", "0", " ", "-", "é", "漢", "字", "🦀", "\u{301}", "ab cd",
        ]),
        0..8,
    )
    .prop_map(|parts| parts.concat())
}

const HEADERS: [&str; 5] = ["NAME", "SIZE>", "", "X>", "LONG HEADER"];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 512 }))]

    #[test]
    fn tables_draw_as_comfy_table_draws_them(
        columns in 1..=HEADERS.len(),
        rows in prop::collection::vec(prop::collection::vec(cell_text(), 0..7), 0..6),
    ) {
        let headers = &HEADERS[..columns];
        let mut table = Table::new(headers);
        for row in &rows {
            table.row(row.clone());
        }
        prop_assert_eq!(table.to_string(), comfy(headers, &rows));
    }
}

#[test]
fn an_empty_table_is_its_header_line() {
    let table = Table::new(&["A", "BB>"]);
    assert_eq!(table.to_string(), "A  BB\n");
    assert_eq!(table.to_string(), comfy(&["A", "BB>"], &[]));
}

#[test]
fn control_characters_are_escaped_and_long_cells_cut() {
    let mut table = Table::new(&["A", "B"]);
    table.row(vec!["x\ny\u{1b}[2J".into(), "b".repeat(300)]);
    let text = table.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text:?}");
    assert!(lines[1].starts_with("x\\u{a}y\\u{1b}[2J  "), "{text:?}");
    assert!(
        lines[1].ends_with(&format!("{}…", "b".repeat(255))),
        "{text:?}"
    );
}

/// Drawing a table asks the heap for its output and a line buffer (each grown a number of times
/// logarithmic in its length), not for every cell: a plan of a thousand hotplug slots is drawn
/// in a few dozen requests, where a request or more per cell would take thousands.
#[test]
fn drawing_allocates_per_table_not_per_cell() {
    for rows in [10, 1000] {
        let mut table = Table::new(&["SLOT>", "START", "END", "SIZE>", "NODE", "BACKING"]);
        for i in 0..rows {
            table.row(
                [
                    i.to_string(),
                    format!("{:#x}", i << 27),
                    format!("{:#x}", (i << 27) + 1),
                ]
                .into_iter()
                .chain(["128 MiB", "0", "memfd, THP"].map(String::from))
                .collect(),
            );
        }
        let (text, usage) = used_by(|| table.to_string());
        assert_eq!(text.lines().count(), rows + 1);
        assert!(usage.requests <= 64, "{rows} rows: {usage:?}");
    }
}

//! Text tables: the plan's memory map, devices and hotplug slots.

use std::fmt::{self, Write as _};

use crate::plan::{Plan, Span};
use crate::size::Size;

/// A text table with a header row; columns are padded to their widest cell, and the columns
/// marked as numeric are aligned right.
#[derive(Clone, Debug, Default)]
pub struct Table {
    headers: Vec<&'static str>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these columns; a header ending in `>` is aligned right (the `>` is not
    /// shown).
    ///
    /// ```
    /// use memvisor::render::Table;
    ///
    /// let mut t = Table::new(&["NAME", "SIZE>"]);
    /// t.row(vec!["a".into(), "1 KiB".into()]);
    /// t.row(vec!["bbb".into(), "12 MiB".into()]);
    /// assert_eq!(t.to_string(), "NAME    SIZE\na      1 KiB\nbbb   12 MiB\n");
    /// ```
    #[must_use]
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.iter().map(|h| h.trim_end_matches('>')).collect(),
            right: headers.iter().map(|h| h.ends_with('>')).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are empty, extra ones ignored).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let empty = String::new();
        let line = |f: &mut fmt::Formatter<'_>, cells: &mut dyn Iterator<Item = &str>| {
            let mut out = String::new();
            for (i, cell) in cells.enumerate().take(n) {
                if i > 0 {
                    out.push_str("  ");
                }
                if self.right[i] {
                    let _ = write!(out, "{cell:>w$}", w = widths[i]);
                } else {
                    let _ = write!(out, "{cell:<w$}", w = widths[i]);
                }
            }
            writeln!(f, "{}", out.trim_end())
        };
        line(f, &mut self.headers.iter().copied())?;
        for row in &self.rows {
            line(
                f,
                &mut (0..n).map(|i| row.get(i).unwrap_or(&empty).as_str()),
            )?;
        }
        Ok(())
    }
}

/// Hex digits needed for addresses up to `limit` (at least 8).
fn digits(limit: u64) -> usize {
    let bits = 64 - limit.leading_zeros() as usize;
    bits.div_ceil(4).max(8)
}

fn addr(value: u64, width: usize) -> String {
    format!("0x{value:0width$x}")
}

fn range(span: Option<Span>, width: usize) -> String {
    span.map_or_else(
        || "-".to_owned(),
        |s| format!("{}-{}", addr(s.start, width), addr(s.end, width)),
    )
}

/// The plan as text: a summary, the memory map, the devices, the hotplug slots and the layout
/// windows.
#[must_use]
pub fn plan_text(plan: &Plan) -> String {
    let w = digits(plan.address_limit);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {}, {}-bit guest physical addresses (limit {:#x})",
        plan.name, plan.arch, plan.phys_bits, plan.address_limit
    );
    let nodes: Vec<String> = plan
        .nodes
        .iter()
        .map(|n| format!("node{} {}", n.node, Size(n.size)))
        .collect();
    let _ = writeln!(
        out,
        "RAM {} in {} NUMA node{} ({}); {} device{}; {} hotplug slot{}",
        Size(plan.ram),
        plan.nodes.len(),
        if plan.nodes.len() == 1 { "" } else { "s" },
        nodes.join(", "),
        plan.devices.len(),
        if plan.devices.len() == 1 { "" } else { "s" },
        plan.hotplug.len(),
        if plan.hotplug.len() == 1 { "" } else { "s" },
    );

    out.push_str("\nGuest physical memory map\n");
    let mut t = Table::new(&["START", "END", "SIZE>", "TYPE", "OWNER", "NODE", "BACKING"]);
    for m in &plan.map {
        t.row(vec![
            addr(m.span.start, w),
            addr(m.span.end, w),
            Size(m.span.size).to_string(),
            m.ty.to_owned(),
            m.owner.clone(),
            m.node.map_or_else(|| "-".to_owned(), |n| n.to_string()),
            m.backing.to_string(),
        ]);
    }
    out.push_str(&t.to_string());

    let irq = match plan.arch {
        crate::spec::Arch::X86_64 => "GSI>",
        crate::spec::Arch::Aarch64 => "SPI>",
    };
    out.push_str("\nDevices\n");
    let mut t = Table::new(&["NAME", "TYPE", "MMIO", "SIZE>", "PORTS", irq, "DAX"]);
    for d in &plan.devices {
        t.row(vec![
            d.name.clone(),
            d.ty.to_owned(),
            range(d.mmio, w),
            d.mmio
                .map_or_else(|| "-".to_owned(), |s| Size(s.size).to_string()),
            d.pio.map_or_else(
                || "-".to_owned(),
                |p| format!("{:#x}-{:#x}", p.start, p.end),
            ),
            d.irq.to_string(),
            d.dax.map_or_else(
                || "-".to_owned(),
                |s| format!("{} ({})", range(Some(s), w), Size(s.size)),
            ),
        ]);
    }
    out.push_str(&t.to_string());

    out.push_str("\nHotplug slots\n");
    if plan.hotplug.is_empty() {
        out.push_str("none\n");
    } else {
        let mut t = Table::new(&["SLOT>", "START", "END", "SIZE>", "NODE", "BACKING"]);
        for s in &plan.hotplug {
            t.row(vec![
                s.index.to_string(),
                addr(s.span.start, w),
                addr(s.span.end, w),
                Size(s.span.size).to_string(),
                s.node.to_string(),
                s.backing.to_string(),
            ]);
        }
        out.push_str(&t.to_string());
    }

    out.push_str("\nLayout windows\n");
    let mut t = Table::new(&["KIND", "START", "END", "SIZE>"]);
    for win in &plan.windows {
        t.row(vec![
            win.kind.clone(),
            addr(win.span.start, w),
            addr(win.span.end, w),
            Size(win.span.size).to_string(),
        ]);
    }
    out.push_str(&t.to_string());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_cover_limit() {
        assert_eq!(digits(0xff_ffff_ffff), 10);
        assert_eq!(digits(0xffff), 8);
        assert_eq!(digits(u64::MAX), 16);
    }

    #[test]
    fn table_pads_missing_cells() {
        let mut t = Table::new(&["A", "B"]);
        t.row(vec!["x".into()]);
        assert_eq!(t.to_string(), "A  B\nx\n");
    }
}

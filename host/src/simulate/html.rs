//! Renders simulation reports as one self-contained HTML page (inline SVG, no scripts, no
//! network) or as a standalone SVG chart for docs.

use std::fmt::Write as _;

use super::{Report, table};

const BAR_W: f64 = 22.0;
const CHART_H: f64 = 140.0;
const PANEL_W: f64 = 360.0;
const PANEL_H: f64 = 210.0;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// One panel per placer: calls per runner as bars, a dashed line at the average.
pub fn svg(reports: &[Report], title: &str) -> String {
    let cols = 2usize;
    let rows = reports.len().div_ceil(cols);
    let (width, height) = (PANEL_W * cols as f64 + 20.0, PANEL_H * rows as f64 + 50.0);
    let global_max = reports.iter().flat_map(|r| r.per_runner.iter().map(|(_, c)| *c)).max().unwrap_or(1).max(1) as f64;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(s, r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
    let _ = write!(s, r#"<text x="10" y="22" font-size="14" font-weight="bold">{}</text>"#, escape(title));
    for (k, r) in reports.iter().enumerate() {
        let (px, py) = (10.0 + PANEL_W * (k % cols) as f64, 40.0 + PANEL_H * (k / cols) as f64);
        let _ = write!(
            s,
            r#"<text x="{px}" y="{}" font-weight="bold">{}</text><text x="{px}" y="{}">max/avg {:.2} · CV {:.3} · warm-hit {:.1}%</text>"#,
            py + 12.0,
            escape(&r.placer),
            py + 26.0,
            r.max_over_avg,
            r.cv,
            r.warm_hit_ratio * 100.0
        );
        let base = py + 40.0 + CHART_H;
        let n = r.per_runner.len().max(1) as f64;
        let bar = (BAR_W).min((PANEL_W - 30.0) / n);
        let avg = r.per_runner.iter().map(|(_, c)| *c as f64).sum::<f64>() / n;
        for (i, (address, count)) in r.per_runner.iter().enumerate() {
            let h = *count as f64 / global_max * CHART_H;
            let x = px + i as f64 * bar;
            let _ = write!(
                s,
                r##"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="#4a78b5"><title>{}: {count} calls</title></rect>"##,
                base - h,
                bar - 2.0,
                escape(address)
            );
        }
        let ay = base - avg / global_max * CHART_H;
        let _ = write!(
            s,
            r##"<line x1="{px}" y1="{ay:.1}" x2="{:.1}" y2="{ay:.1}" stroke="#d9534f" stroke-dasharray="4 3"/><line x1="{px}" y1="{base}" x2="{:.1}" y2="{base}" stroke="#333"/>"##,
            px + n * bar,
            px + n * bar
        );
    }
    s.push_str("</svg>\n");
    s
}

/// A complete HTML page: the workload line, the table and the chart.
pub fn page(reports: &[Report], workload: &str) -> String {
    let mut rows = String::new();
    for r in reports {
        let moved: Vec<String> = r.moved.iter().map(|(e, m)| format!("{}: {:.1}%", escape(e), m * 100.0)).collect();
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.2}</td><td>{:.1}%</td><td>{:.1}%</td><td>{}</td></tr>",
            escape(&r.placer),
            r.max_over_avg,
            r.cv,
            r.peak_inflight_ratio,
            r.same_runner_ratio * 100.0,
            r.warm_hit_ratio * 100.0,
            moved.join("<br>")
        );
    }
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>placerd simulate</title>
<style>body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child,th:first-child{{text-align:left}}</style>
</head><body>
<h1>placerd simulate</h1>
<p>{}</p>
<table><tr><th>placer</th><th>calls max/avg</th><th>CV</th><th>peak in-flight max/avg</th><th>same-runner</th><th>warm-hit</th><th>keys moved</th></tr>{rows}</table>
<h2>Calls per runner (final membership)</h2>
{}
<pre>{}</pre>
</body></html>
"#,
        escape(workload),
        svg(reports, "calls per runner; dashed line = average"),
        escape(&table(reports))
    )
}

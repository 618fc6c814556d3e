//! SVG plots written by hand (no plotting dependency): latency CDF per level, on-time delivery
//! over time, and the distribution of upload per node, one line per protocol and level.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::report::{Report, Series};

const W: f64 = 760.0;
const H: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLORS: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];
const DASHES: [&str; 4] = ["", "6,3", "2,2", "8,3,2,3"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A "nice" tick step for a range.
fn tick_step(range: f64) -> f64 {
    let raw = range / 6.0;
    let mag = 10f64.powf(raw.log10().floor());
    let n = raw / mag;
    let m = if n < 1.5 {
        1.0
    } else if n < 3.5 {
        2.0
    } else if n < 7.5 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// A line chart of `series` as an SVG document. Series are styled by `style(i)`
/// `(color index, dash index)`.
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    style: &dyn Fn(usize) -> (usize, usize),
) -> String {
    let pts = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    y0 = y0.min(0.0);
    if (x1 - x0).abs() < 1e-9 {
        x1 = x0 + 1.0;
    }
    if (y1 - y0).abs() < 1e-9 {
        y1 = y0 + 1.0;
    }
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| TOP + ph - (y - y0) / (y1 - y0) * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        LEFT + pw / 2.0,
        esc(title)
    );
    // Grid and ticks.
    let step = tick_step(x1 - x0);
    let mut t = (x0 / step).ceil() * step;
    while t <= x1 + 1e-9 {
        let x = sx(t);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#e5e5e5"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + ph,
            TOP + ph + 16.0,
            fmt_tick(t)
        );
        t += step;
    }
    let step = tick_step(y1 - y0);
    let mut t = (y0 / step).ceil() * step;
    while t <= y1 + 1e-9 {
        let y = sy(t);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e5e5e5"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            y + 4.0,
            fmt_tick(t)
        );
        t += step;
    }
    let _ = writeln!(
        s,
        r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        LEFT + pw / 2.0,
        H - 12.0,
        esc(x_label)
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">{}</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0,
        esc(y_label)
    );
    for (i, ser) in series.iter().enumerate() {
        let (c, d) = style(i);
        let color = COLORS[c % COLORS.len()];
        let dash = DASHES[d % DASHES.len()];
        let path: Vec<String> = ser
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        if !path.is_empty() {
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.8" stroke-dasharray="{dash}" points="{}"/>"#,
                path.join(" ")
            );
        }
        let ly = TOP + 10.0 + i as f64 * 18.0;
        let lx = LEFT + pw + 12.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/><text x="{}" y="{}">{}</text>"#,
            lx + 26.0,
            lx + 32.0,
            ly + 4.0,
            esc(&ser.label)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn fmt_tick(v: f64) -> String {
    if v.abs() >= 1000.0 || v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// Writes `latency_cdf.svg`, `delivery.svg` and `upload.svg` into `dir`.
pub fn write_plots(report: &Report, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    let mut write = |name: &str, svg: String| -> std::io::Result<()> {
        let p = dir.join(name);
        std::fs::write(&p, svg)?;
        out.push(p);
        Ok(())
    };
    // Color per protocol, dash per level.
    let per_level = |pick: &dyn Fn(&crate::report::RunReport) -> &Vec<Series>| {
        let mut series = Vec::new();
        let mut styles = Vec::new();
        for (pi, r) in report.runs.iter().enumerate() {
            for (li, s) in pick(r).iter().enumerate() {
                series.push(Series {
                    label: format!("{} {}", r.protocol, s.label),
                    points: s.points.clone(),
                });
                styles.push((pi, li));
            }
        }
        (series, styles)
    };
    let (series, styles) = per_level(&|r| &r.latency_cdf);
    write(
        "latency_cdf.svg",
        line_chart(
            &format!("{}: end-to-end latency CDF", report.scenario),
            "latency (ms)",
            "fraction of delivered frames",
            &series,
            &|i| styles[i],
        ),
    )?;
    let (series, styles) = per_level(&|r| &r.delivery_over_time);
    write(
        "delivery.svg",
        line_chart(
            &format!("{}: on-time delivery per second", report.scenario),
            "stream time (s)",
            "frames on time / expected",
            &series,
            &|i| styles[i],
        ),
    )?;
    let series: Vec<Series> = report.runs.iter().map(|r| r.upload.cdf.clone()).collect();
    write(
        "upload.svg",
        line_chart(
            &format!("{}: upload per viewer", report.scenario),
            "upload (kbit/s)",
            "fraction of viewers",
            &series,
            &|i| (i, 0),
        ),
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_is_well_formed_svg() {
        let s = Series {
            label: "a<b".into(),
            points: vec![(0.0, 0.0), (10.0, 0.5), (20.0, 1.0)],
        };
        let svg = line_chart("t", "x", "y", &[s], &|i| (i, 0));
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a&lt;b") && svg.contains("<polyline"));
        assert_eq!(tick_step(100.0), 20.0);
    }
}

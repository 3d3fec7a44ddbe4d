//! Latency plots as standalone SVG, written by hand: a percentile-distribution chart (the usual
//! HdrHistogram picture, x = 1 / (1 - quantile) on a log scale) needs no plotting crate.

use std::fmt::Write as _;

/// One curve: a label and (quantile, milliseconds) points with quantiles in [0, 1).
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 480.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLOURS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];

/// Position of quantile `q` on the x axis: log10(1 / (1 - q)), so 90 % is 1, 99 % is 2...
fn nines(q: f64) -> f64 {
    (1.0 / (1.0 - q.clamp(0.0, 0.999_999_9))).log10()
}

/// A round upper bound for the y axis and its tick step.
fn y_scale(max: f64) -> (f64, f64) {
    let max = if max > 0.0 { max } else { 1.0 };
    let raw_step = max / 5.0;
    let magnitude = 10f64.powf(raw_step.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw_step).unwrap_or(10.0 * magnitude);
    ((max / step).ceil() * step, step)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Renders the series as one SVG document.
pub fn percentile_svg(title: &str, series: &[Series]) -> String {
    let max_ms = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.0, f64::max);
    let max_nines = series.iter().flat_map(|s| s.points.iter().map(|p| nines(p.0))).fold(2.0, f64::max).ceil();
    let (y_max, y_step) = y_scale(max_ms);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |q: f64| LEFT + nines(q) / max_nines * plot_w;
    let y = |ms: f64| TOP + plot_h - (ms / y_max).min(1.0) * plot_h;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    // Grid and y labels.
    let mut v = 0.0;
    while v <= y_max + y_step / 2.0 {
        let yy = y(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            yy + 4.0,
            trim_number(v)
        );
        v += y_step;
    }
    // x ticks at 0 %, 90 %, 99 %, 99.9 %...
    for n in 0..=max_nines as u32 {
        let q = 1.0 - 10f64.powi(-(n as i32));
        let xx = LEFT + f64::from(n) / max_nines * plot_w;
        let label = if n == 0 { "0%".to_owned() } else { format!("{}%", trim_number(q * 100.0)) };
        let _ = writeln!(
            svg,
            r##"<line x1="{xx:.1}" y1="{TOP}" x2="{xx:.1}" y2="{:.1}" stroke="#ddd"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 16.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text><text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">latency (ms)</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 10.0,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    let _ =
        writeln!(svg, r#"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>"#);
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<String> = s.points.iter().map(|&(q, ms)| format!("{:.1},{:.1}", x(q), y(ms))).collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        let ly = TOP + 16.0 + 16.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            LEFT + 10.0,
            ly - 4.0,
            LEFT + 30.0,
            ly - 4.0,
            LEFT + 36.0,
            ly,
            escape(&s.label)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// `2` rather than `2.000000`, `99.9` rather than `99.90000000001`.
fn trim_number(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_one_polyline_per_series_with_every_point() {
        let a = Series { label: "mix <p50>".into(), points: vec![(0.0, 1.0), (0.5, 2.0), (0.9, 4.0), (0.999, 40.0)] };
        let b = Series { label: "other".into(), points: vec![(0.0, 3.0), (0.99, 7.5)] };
        let svg = percentile_svg("latency & co", &[a, b]);
        assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("mix &lt;p50&gt;") && svg.contains("latency &amp; co"));
        assert!(svg.contains(">99.9%<"), "x ticks reach the largest quantile");
        let first = svg.split("points=\"").nth(1).unwrap_or_default();
        assert_eq!(first.split('"').next().unwrap_or_default().split(' ').count(), 4);
    }

    #[test]
    fn y_axis_rounds_up() {
        assert_eq!(y_scale(9.3), (10.0, 2.0));
        assert_eq!(y_scale(0.0), (1.0, 0.2));
        let (max, step) = y_scale(123.0);
        assert!(max >= 123.0 && step > 0.0 && (max / step) <= 10.0);
        assert_eq!(trim_number(99.9), "99.9");
        assert_eq!(trim_number(2.0), "2");
    }

    #[test]
    fn nines_scale() {
        assert!((nines(0.9) - 1.0).abs() < 1e-9);
        assert!((nines(0.999) - 3.0).abs() < 1e-9);
        assert_eq!(nines(0.0), 0.0);
    }
}

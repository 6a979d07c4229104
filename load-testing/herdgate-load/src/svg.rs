//! The latency picture a run leaves behind: latency by percentile, the x axis
//! stretched towards the tail (90%, 99%, 99.9%, ...), as HdrHistogram's own
//! plots draw it. Hand-written SVG: a plotting crate would bring fonts and a
//! rasteriser for one line chart.

use std::fmt::Write;

use hdrhistogram::Histogram;

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 500.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 70.0;
const BOTTOM: f64 = 60.0;
/// Percentile ticks: 0%, 90%, 99%, ... up to 99.9999%.
const MAX_NINES: u32 = 6;

/// The SVG document for `histogram` (latencies in microseconds).
pub fn render(histogram: &Histogram<u64>, title: &str, subtitle: &str) -> String {
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="13">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="28" font-size="17" font-weight="bold">{}</text>
<text x="{LEFT}" y="50" fill="#555">{}</text>
"##,
        escape(title),
        escape(subtitle)
    );
    if histogram.is_empty() {
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">no requests recorded</text>"#,
            WIDTH / 2.0,
            HEIGHT / 2.0
        );
        svg.push_str("</svg>\n");
        return svg;
    }
    // Past 1/count the percentiles say nothing more.
    let nines = ((histogram.len() as f64).log10().ceil() as u32).clamp(1, MAX_NINES);
    let y_max = nice_ceiling(histogram.max() as f64 / 1_000.0);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x_of = |quantile: f64| {
        let tail = (1.0 / (1.0 - quantile).max(1e-9)).log10().min(nines as f64);
        LEFT + plot_w * tail / nines as f64
    };
    let y_of = |ms: f64| TOP + plot_h * (1.0 - ms / y_max);

    for i in 0..=5 {
        let ms = y_max * i as f64 / 5.0;
        let y = y_of(ms);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 8.0,
            y + 4.0,
            tick_label(ms)
        );
    }
    for n in 0..=nines {
        let x = LEFT + plot_w * n as f64 / nines as f64;
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 20.0,
            percentile_label(n)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>
<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">latency (ms)</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 12.0,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );

    let mut points = String::new();
    for v in histogram.iter_quantiles(10) {
        let q = v.quantile_iterated_to();
        let ms = histogram.highest_equivalent(v.value_iterated_to()) as f64 / 1_000.0;
        let _ = write!(points, "{:.1},{:.1} ", x_of(q), y_of(ms.min(y_max)));
    }
    let _ = writeln!(
        svg,
        r##"<polyline fill="none" stroke="#1f6feb" stroke-width="2" points="{}"/>"##,
        points.trim_end()
    );
    for (label, q) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
        if x_of(q) > LEFT + plot_w + 0.5 {
            continue;
        }
        let ms = histogram.value_at_quantile(q) as f64 / 1_000.0;
        let (x, y) = (x_of(q), y_of(ms));
        let _ = writeln!(
            svg,
            r##"<circle cx="{x:.1}" cy="{y:.1}" r="4" fill="#d1242f"/><text x="{:.1}" y="{:.1}">{label} {}</text>"##,
            x + 6.0,
            y - 6.0,
            tick_label(ms)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The smallest 1, 2 or 5 times a power of ten at or above `value`.
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let power = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|&v| v >= value)
        .unwrap_or(10.0 * power)
}

fn tick_label(ms: f64) -> String {
    if ms >= 100.0 || ms == ms.trunc() {
        format!("{ms:.0}")
    } else {
        format!("{ms:.2}")
    }
}

/// 0 -> "0%", 1 -> "90%", 2 -> "99%", 3 -> "99.9%", ...
fn percentile_label(nines: u32) -> String {
    match nines {
        0 => "0%".into(),
        1 => "90%".into(),
        n => format!("99.{}%", "9".repeat(n as usize - 2)).replace("99.%", "99%"),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(values: impl IntoIterator<Item = u64>) -> Histogram<u64> {
        let mut h = super::super::stats::new_histogram();
        for v in values {
            h.record(v).unwrap();
        }
        h
    }

    #[test]
    fn a_run_draws_one_line_with_its_tail_marked() {
        let svg = render(&histogram(1..=10_000), "herd <1 seat>", "p99 9.9 ms");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains("herd &lt;1 seat&gt;"));
        assert!(svg.contains(">p99 9.90</text>"), "{svg}");
        // 10,000 samples resolve the tail to 99.99% and no further.
        assert!(svg.contains(">99.99%<") && !svg.contains(">99.999%<"));
        // Every point lies inside the picture.
        let points = svg
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        for point in points.split(' ') {
            let (x, y) = point.split_once(',').unwrap();
            let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
            assert!((LEFT..=WIDTH - RIGHT + 0.1).contains(&x), "{point}");
            assert!((TOP - 0.1..=HEIGHT - BOTTOM + 0.1).contains(&y), "{point}");
        }
    }

    #[test]
    fn an_empty_run_says_so() {
        let svg = render(&histogram([]), "t", "s");
        assert!(svg.contains("no requests recorded") && !svg.contains("polyline"));
    }

    #[test]
    fn axes_use_round_numbers() {
        assert_eq!(nice_ceiling(7.3), 10.0);
        assert_eq!(nice_ceiling(1.5), 2.0);
        assert_eq!(nice_ceiling(0.31), 0.5);
        assert_eq!(nice_ceiling(120.0), 200.0);
        assert_eq!(percentile_label(2), "99%");
        assert_eq!(percentile_label(4), "99.99%");
    }
}

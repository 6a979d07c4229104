//! What a waiting-room run shows: the room's admissions a second, from its
//! own count sampled once a second, against the rate it was set to, over the
//! window in which admission ran and the line was never empty (an empty line
//! admits nobody, whatever the rate); the admissions out of order; the draw;
//! how the buyers fared. And its picture.

use std::fmt::Write;

use serde::Serialize;
use tokio::time::Instant;

use super::{Stats, buyer::Journeys, draw::Draw};
use crate::report::{Summary, thousands};

/// The room's counts at one moment of the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    pub at_secs: f64,
    pub admitted: u64,
    pub queued: u64,
    pub active: u64,
    pub out_of_order: u64,
}

impl Sample {
    pub fn of(stats: &Stats, started: Instant) -> Self {
        Sample {
            at_secs: started.elapsed().as_secs_f64(),
            admitted: stats.admitted,
            queued: stats.queued,
            active: stats.active,
            out_of_order: stats.out_of_order,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomReport {
    /// Admissions a second, as set.
    pub target_rate: f64,
    pub max_active: u64,
    /// `None` when admission never ran with buyers waiting.
    pub window: Option<Window>,
    pub out_of_order: u64,
    pub draw: Option<Draw>,
    pub buyers: Journeys,
    pub samples: Vec<Sample>,
}

/// Admission while it ran with buyers waiting.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Window {
    pub from_secs: f64,
    pub to_secs: f64,
    pub admitted: u64,
    /// Admissions a second over the window.
    pub rate: f64,
    /// `rate` over the target: 1.0 is exact.
    pub ratio: f64,
    /// Admissions a second between consecutive samples.
    pub per_second_min: f64,
    pub per_second_max: f64,
}

pub fn report(
    before: &Stats,
    samples: Vec<Sample>,
    admitting: Option<(f64, f64)>,
    draw: Option<Draw>,
    buyers: Journeys,
    out_of_order: u64,
) -> RoomReport {
    RoomReport {
        target_rate: before.admission_rate,
        max_active: before.max_active,
        window: admitting
            .and_then(|(from, until)| window(&samples, from, until, before.admission_rate)),
        out_of_order,
        draw,
        buyers,
        samples,
    }
}

/// From the first sample at or after `from` with buyers waiting, to the last
/// one before the line first ran empty or `until` (the buyers stop visiting,
/// and only visits admit).
fn window(samples: &[Sample], from: f64, until: f64, target: f64) -> Option<Window> {
    let start = samples
        .iter()
        .position(|s| s.at_secs >= from && s.queued > 0)?;
    let run = samples[start..]
        .iter()
        .take_while(|s| s.queued > 0 && s.at_secs <= until)
        .count();
    let span = &samples[start..start + run];
    let (first, last) = (span.first()?, span.last()?);
    let secs = last.at_secs - first.at_secs;
    if secs <= 0.0 {
        return None;
    }
    let admitted = last.admitted - first.admitted;
    let steps: Vec<f64> = span
        .windows(2)
        .map(|w| (w[1].admitted - w[0].admitted) as f64 / (w[1].at_secs - w[0].at_secs))
        .collect();
    let rate = admitted as f64 / secs;
    Some(Window {
        from_secs: first.at_secs,
        to_secs: last.at_secs,
        admitted,
        rate,
        ratio: rate / target,
        per_second_min: steps.iter().copied().fold(f64::INFINITY, f64::min),
        per_second_max: steps.iter().copied().fold(0.0, f64::max),
    })
}

impl RoomReport {
    /// The summary's lines for the room.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut line = |label: &str, text: String| out.push_str(&format!("{label:<11}{text}\n"));
        line(
            "room",
            format!(
                "set to {} a second, at most {} admitted at once",
                self.target_rate,
                thousands(self.max_active)
            ),
        );
        line(
            "admitted",
            match &self.window {
                Some(w) => format!(
                    "{} in {:.1} s with buyers waiting ({:.1} to {:.1} s): {:.2} a second, \
                     {:.1}% of the set rate (each second: {:.0} to {:.0})",
                    thousands(w.admitted),
                    w.to_secs - w.from_secs,
                    w.from_secs,
                    w.to_secs,
                    w.rate,
                    100.0 * w.ratio,
                    w.per_second_min,
                    w.per_second_max
                ),
                None => "no admission ran with buyers waiting".into(),
            },
        );
        let b = &self.buyers;
        line(
            "buyers",
            format!(
                "{} joined, {} admitted, {} held a seat, {} confirmed; walked away: {} in \
                 line, {} admitted; {} lost their place, {} found no seat, {} stopped",
                thousands(b.joined),
                thousands(b.admitted),
                thousands(b.booked),
                thousands(b.confirmed),
                thousands(b.walked_in_line),
                thousands(b.walked_admitted),
                thousands(b.lost),
                thousands(b.no_seat),
                thousands(b.refused)
            ),
        );
        let draw = match &self.draw {
            None => "the room had started: no draw to check".to_string(),
            Some(d) => format!(
                "{} joined before the start; {} places read after it, {} the order of \
                 SHA-1(seed:userId) for the revealed seed; SHA-256(seed) {} the commitment{}",
                thousands(d.pre_queue),
                thousands(d.placed as u64),
                if d.in_order { "all in" } else { "NOT in" },
                if d.commitment_kept { "is" } else { "is NOT" },
                d.first_break
                    .as_ref()
                    .map_or(String::new(), |b| format!(" ({b})"))
            ),
        };
        line(
            "fairness",
            format!("{} admissions out of order; {draw}", self.out_of_order),
        );
        out
    }

    /// Admissions a second against the set rate, as SVG.
    pub fn picture(&self, summary: &Summary) -> String {
        const W: f64 = 900.0;
        const H: f64 = 460.0;
        const L: f64 = 70.0;
        const R: f64 = 30.0;
        const T: f64 = 70.0;
        const B: f64 = 55.0;
        let steps: Vec<(f64, f64)> = self
            .samples
            .windows(2)
            .filter(|w| w[1].at_secs > w[0].at_secs)
            .map(|w| {
                let rate = (w[1].admitted.saturating_sub(w[0].admitted)) as f64
                    / (w[1].at_secs - w[0].at_secs);
                (w[1].at_secs, rate)
            })
            .collect();
        let x_max = self
            .samples
            .last()
            .map_or(1.0, |s| s.at_secs.ceil().max(1.0));
        let top = steps
            .iter()
            .map(|&(_, r)| r)
            .fold(self.target_rate * 1.5, f64::max);
        let y_max = nice(top);
        let x = |secs: f64| L + (W - L - R) * secs / x_max;
        let y = |rate: f64| T + (H - T - B) * (1.0 - rate / y_max);
        let mut svg = format!(
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="13">
<rect width="100%" height="100%" fill="white"/>
<text x="{L}" y="28" font-size="17" font-weight="bold">Admissions a second against the set rate: event {}, {} buyers</text>
<text x="{L}" y="50" fill="#555">{}</text>
"##,
            summary.event,
            thousands(summary.users as u64),
            escape(
                self.render()
                    .lines()
                    .nth(1)
                    .unwrap_or_default()
                    .trim_start_matches("admitted")
                    .trim()
            )
        );
        if let Some(w) = &self.window {
            let _ = writeln!(
                svg,
                r##"<rect x="{:.1}" y="{T}" width="{:.1}" height="{:.1}" fill="#eef5ee"/>"##,
                x(w.from_secs),
                x(w.to_secs) - x(w.from_secs),
                H - T - B
            );
        }
        for i in 0..=5 {
            let rate = y_max * i as f64 / 5.0;
            let _ = writeln!(
                svg,
                r##"<line x1="{L}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#ddd"/><text x="{2:.1}" y="{3:.1}" text-anchor="end">{4}</text>"##,
                y(rate),
                W - R,
                L - 8.0,
                y(rate) + 4.0,
                rate
            );
        }
        let tick = nice(x_max / 8.0);
        let mut secs = 0.0;
        while secs <= x_max + 1e-9 {
            let _ = writeln!(
                svg,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">{secs}</text>"##,
                x(secs),
                H - B + 18.0
            );
            secs += tick;
        }
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">seconds since the run began (green: admitting with buyers waiting)</text>
<text x="18" y="{2:.1}" text-anchor="middle" transform="rotate(-90 18 {2:.1})">admitted a second</text>
<line x1="{L}" y1="{3:.1}" x2="{4:.1}" y2="{3:.1}" stroke="#d1242f" stroke-width="2" stroke-dasharray="8 5"/>
<text x="{4:.1}" y="{5:.1}" text-anchor="end" fill="#d1242f">set rate {6}/s</text>"##,
            L + (W - L - R) / 2.0,
            H - 12.0,
            T + (H - T - B) / 2.0,
            y(self.target_rate),
            W - R,
            y(self.target_rate) - 6.0,
            self.target_rate
        );
        let points: Vec<String> = steps
            .iter()
            .map(|&(secs, rate)| format!("{:.1},{:.1}", x(secs), y(rate.min(y_max))))
            .collect();
        let _ = writeln!(
            svg,
            r##"<polyline fill="none" stroke="#1f6feb" stroke-width="2" points="{}"/>"##,
            points.join(" ")
        );
        svg.push_str("</svg>\n");
        svg
    }
}

/// The smallest 1, 2 or 5 times a power of ten at or above `value`.
fn nice(value: f64) -> f64 {
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

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_secs: f64, admitted: u64, queued: u64) -> Sample {
        Sample {
            at_secs,
            admitted,
            queued,
            active: 0,
            out_of_order: 0,
        }
    }

    #[test]
    fn the_window_runs_while_buyers_wait_and_the_rate_is_measured_over_it() {
        let samples = vec![
            sample(0.0, 0, 0),
            sample(1.0, 0, 500),
            sample(2.0, 45, 455),
            sample(3.0, 100, 400),
            sample(4.0, 150, 350),
            sample(5.0, 160, 0),
            sample(6.0, 160, 20),
        ];
        let w = window(&samples, 0.5, 60.0, 50.0).unwrap();
        assert_eq!((w.from_secs, w.to_secs, w.admitted), (1.0, 4.0, 150));
        assert_eq!(w.rate, 50.0);
        assert_eq!(w.ratio, 1.0);
        assert_eq!((w.per_second_min, w.per_second_max), (45.0, 55.0));
        // Admission held until 2.5 s: measured from the first sample after it.
        assert_eq!(window(&samples, 2.5, 60.0, 50.0).unwrap().from_secs, 3.0);
        assert!(window(&samples, 9.0, 60.0, 50.0).is_none());
        // Ends before the buyers stop.
        assert_eq!(window(&samples, 0.5, 3.5, 50.0).unwrap().to_secs, 3.0);
    }
}

//! HTML renderings: one self-contained, printable file each — inline CSS, the
//! charts as inline SVG, no scripts, fonts or images fetched from anywhere —
//! so a certificate opens the same way in ten years, offline, and prints.
//!
//! The page structure is a minijinja template (auto-escaped, being `.html`);
//! the SVG is drawn here, where the arithmetic is, with every text escaped.

use super::certificate::{Certificate, ProcessorRow};
use super::manifest::Manifest;
use super::{escape, human_ms, PeriodReport};
use minijinja::{context, Environment, Value};

const STYLE: &str = include_str!("templates/style.css");

fn env() -> Environment<'static> {
    let mut env = Environment::new();
    env.add_template(
        "certificate.html",
        include_str!("templates/certificate.html"),
    )
    .expect("the built-in certificate template parses");
    env.add_template("period.html", include_str!("templates/period.html"))
        .expect("the built-in period template parses");
    env.add_template("index.html", include_str!("templates/index.html"))
        .expect("the built-in package index template parses");
    env
}

fn render(name: &str, ctx: Value) -> Result<String, minijinja::Error> {
    env().get_template(name)?.render(ctx)
}

/// The certificate as one HTML page.
pub fn certificate(c: &Certificate) -> Result<String, minijinja::Error> {
    let rows: Vec<Value> = c
        .processors
        .iter()
        .map(|p| {
            context! {
                p => Value::from_serialize(p),
                evidence => p.evidence_line(),
                qualifier => p.qualifier(),
                class => result_class(&p.result),
            }
        })
        .collect();
    render(
        "certificate.html",
        context! {
            c => Value::from_serialize(c),
            rows => rows,
            timeline => Value::from_safe_string(timeline_svg(&c.processors)),
            style => Value::from_safe_string(STYLE.to_string()),
        },
    )
}

/// The period report as one HTML page.
pub fn period(r: &PeriodReport) -> Result<String, minijinja::Error> {
    render(
        "period.html",
        context! {
            r => Value::from_serialize(r),
            chart => Value::from_safe_string(completion_svg(r)),
            style => Value::from_safe_string(STYLE.to_string()),
        },
    )
}

/// The export package's `index.html`.
pub fn package_index(m: &Manifest) -> Result<String, minijinja::Error> {
    render(
        "index.html",
        context! {
            m => Value::from_serialize(m),
            style => Value::from_safe_string(STYLE.to_string()),
        },
    )
}

fn result_class(result: &str) -> &'static str {
    match result {
        "erased" | "purged" | "exported" | "confirmed" => "ok",
        "not_found" => "none",
        "retained" | "held" => "kept",
        "failed" | "skipped" => "bad",
        _ => "open",
    }
}

fn colour(kind: &str) -> &'static str {
    match kind {
        "done" => "#2e7d32",
        "failed" => "#c62828",
        "retry_wait" => "#ef6c00",
        "grace" => "#6a1b9a",
        "held" => "#f9a825",
        "cancelled" => "#757575",
        _ => "#455a64",
    }
}

/// Per-processor timeline: one row each; dots for events, bars for waits
/// (retry back-off, recovery window, legal hold). Waits that run past the
/// chart's end (a six-year hold) are cut with an arrow and their end date.
pub fn timeline_svg(processors: &[ProcessorRow]) -> String {
    const LEFT: f64 = 170.0;
    const WIDTH: f64 = 1000.0;
    const ROW: f64 = 46.0;
    const TOP: f64 = 30.0;
    let plot = WIDTH - LEFT - 30.0;
    let entries = processors.iter().flat_map(|p| p.timeline.iter());
    let t0 = entries.clone().map(|e| e.at_ms).min().unwrap_or(0);
    // The chart spans the events and the short waits; long holds are cut.
    let mut t1 = entries.clone().map(|e| e.at_ms).max().unwrap_or(t0);
    for e in entries.clone() {
        if let Some(u) = e.until_ms {
            if e.kind != "held" {
                t1 = t1.max(u);
            }
        }
    }
    let t1 = t1.max(t0 + 1000);
    let span = (t1 - t0) as f64;
    let x = |t: i64| LEFT + ((t.clamp(t0, t1) - t0) as f64 / span) * plot;
    let height = TOP + ROW * processors.len() as f64 + 40.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"timeline\" viewBox=\"0 0 {WIDTH} {height}\" \
         width=\"100%\" role=\"img\" aria-label=\"Per-processor timeline\">\n"
    );
    // Axis with five ticks, relative to the first event.
    let axis_y = TOP + ROW * processors.len() as f64 + 6.0;
    s.push_str(&format!(
        "<line x1=\"{LEFT}\" y1=\"{axis_y}\" x2=\"{}\" y2=\"{axis_y}\" stroke=\"#90a4ae\"/>\n",
        LEFT + plot
    ));
    for i in 0..=4 {
        let t = t0 + ((t1 - t0) as f64 * i as f64 / 4.0) as i64;
        let xx = x(t);
        s.push_str(&format!(
            "<line x1=\"{xx:.1}\" y1=\"{TOP}\" x2=\"{xx:.1}\" y2=\"{axis_y}\" stroke=\"#eceff1\"/>\
             <text x=\"{xx:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#546e7a\">+{}</text>\n",
            axis_y + 16.0,
            escape(&human_ms(t - t0))
        ));
    }
    s.push_str(&format!(
        "<text x=\"{LEFT}\" y=\"16\" font-size=\"11\" fill=\"#546e7a\">from {}</text>\n",
        escape(&super::ts_human(t0))
    ));
    for (i, p) in processors.iter().enumerate() {
        let y = TOP + ROW * i as f64 + ROW / 2.0;
        s.push_str(&format!(
            "<text x=\"8\" y=\"{:.1}\" font-size=\"13\" font-weight=\"600\" fill=\"#263238\">{}</text>\
             <text x=\"8\" y=\"{:.1}\" font-size=\"11\" fill=\"{}\">{}</text>\n",
            y - 3.0,
            escape(&p.processor),
            y + 12.0,
            colour(match p.result.as_str() {
                "held" => "held",
                "failed" | "skipped" => "failed",
                "grace" => "grace",
                _ if p.state == "done" => "done",
                _ => "other",
            }),
            escape(&p.result)
        ));
        s.push_str(&format!(
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#cfd8dc\" stroke-dasharray=\"2 3\"/>\n",
            LEFT + plot
        ));
        // Waits first, so that the event dots are drawn on top of them.
        for e in &p.timeline {
            let Some(u) = e.until_ms else { continue };
            let (x1, x2) = (x(e.at_ms), x(u).max(x(e.at_ms) + 2.0));
            let c = colour(&e.kind);
            s.push_str(&format!(
                "<rect x=\"{x1:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"10\" rx=\"3\" fill=\"{c}\" fill-opacity=\"0.35\" stroke=\"{c}\">\
                 <title>{}</title></rect>\n",
                y - 5.0,
                x2 - x1,
                escape(&e.label)
            ));
            if u > t1 {
                s.push_str(&format!(
                    "<path d=\"M{:.1} {:.1} l8 5 l-8 5 z\" fill=\"{c}\"/>\
                     <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\" fill=\"#5d4037\">until {}</text>\n",
                    x2,
                    y - 5.0,
                    x2,
                    y - 9.0,
                    escape(&super::ts(u)[..10])
                ));
            }
        }
        for e in &p.timeline {
            if e.kind == "held" {
                continue;
            }
            let c = colour(&e.kind);
            let r = if e.kind == "done" || e.kind == "failed" {
                6.5
            } else {
                4.5
            };
            s.push_str(&format!(
                "<circle cx=\"{:.1}\" cy=\"{y:.1}\" r=\"{r}\" fill=\"{c}\" stroke=\"#fff\" stroke-width=\"1.5\">\
                 <title>{} — {}</title></circle>\n",
                x(e.at_ms),
                escape(&e.at),
                escape(&e.label)
            ));
        }
    }
    // Legend.
    let ly = height - 8.0;
    let mut lx = LEFT;
    for (k, label) in [
        ("created", "planned"),
        ("retry_wait", "attempt failed, retry wait"),
        ("grace", "soft-deleted, recovery window"),
        ("held", "legal hold"),
        ("done", "done"),
        ("failed", "failed"),
    ] {
        s.push_str(&format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4.5\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"#37474f\">{}</text>\n",
            lx,
            ly - 4.0,
            colour(k),
            lx + 8.0,
            ly,
            label
        ));
        lx += 20.0 + label.len() as f64 * 6.0;
    }
    s.push_str("</svg>");
    s
}

/// Completion per processor: one stacked horizontal bar each (done, held,
/// failed, open, cancelled), with the counts written on it.
pub fn completion_svg(r: &PeriodReport) -> String {
    const LEFT: f64 = 170.0;
    const WIDTH: f64 = 1000.0;
    const ROW: f64 = 34.0;
    let plot = WIDTH - LEFT - 110.0;
    let max = r
        .processors
        .iter()
        .map(|p| p.steps)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let height = 20.0 + ROW * r.processors.len().max(1) as f64 + 30.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" viewBox=\"0 0 {WIDTH} {height}\" \
         width=\"100%\" role=\"img\" aria-label=\"Completion per processor\">\n"
    );
    if r.processors.is_empty() {
        s.push_str("<text x=\"10\" y=\"40\" font-size=\"13\" fill=\"#546e7a\">no steps in this period</text>\n");
    }
    for (i, p) in r.processors.iter().enumerate() {
        let y = 20.0 + ROW * i as f64;
        s.push_str(&format!(
            "<text x=\"8\" y=\"{:.1}\" font-size=\"13\" fill=\"#263238\">{}</text>\n",
            y + 15.0,
            escape(&p.processor)
        ));
        let mut xx = LEFT;
        for (n, kind, label) in [
            (p.completed, "done", "completed"),
            (p.held, "held", "held"),
            (p.failed, "failed", "failed"),
            (p.open, "other", "open"),
            (p.cancelled, "cancelled", "cancelled"),
        ] {
            if n == 0 {
                continue;
            }
            let w = n as f64 / max * plot;
            s.push_str(&format!(
                "<rect x=\"{xx:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"22\" fill=\"{}\"><title>{} {label}</title></rect>\
                 <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"#fff\" text-anchor=\"middle\">{n}</text>\n",
                colour(kind),
                n,
                xx + w / 2.0,
                y + 15.0
            ));
            xx += w;
        }
        let pct = if p.steps > 0 {
            100.0 * p.completed as f64 / p.steps as f64
        } else {
            0.0
        };
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" fill=\"#37474f\">{pct:.0}% of {}</text>\n",
            xx + 8.0,
            y + 15.0,
            p.steps
        ));
    }
    let ly = height - 8.0;
    let mut lx = LEFT;
    for (k, label) in [
        ("done", "completed"),
        ("held", "held"),
        ("failed", "failed"),
        ("other", "open"),
        ("cancelled", "cancelled"),
    ] {
        s.push_str(&format!(
            "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{ly:.1}\" font-size=\"11\" fill=\"#37474f\">{label}</text>\n",
            ly - 9.0,
            colour(k),
            lx + 14.0
        ));
        lx += 30.0 + label.len() as f64 * 6.0;
    }
    s.push_str("</svg>");
    s
}

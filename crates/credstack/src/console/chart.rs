//! The wallet's balance over time as an inline SVG: a step chart stacked by
//! purpose (paid at the bottom, then bundled, then promotional on top — the
//! order drawdown burns them from the top down), the debt below zero, and a
//! marker per `expiry` (red, pointing down from the top) and per `renewal`
//! (green, pointing up from the axis). Pure: data in, markup out; every text
//! that reaches the markup is escaped.

use credstack_core::{Amount, EntryKind, Instant, Purpose, Scale};
use std::fmt::Write;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 300.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 18.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 30.0;

/// Fallback fills, used if the page's stylesheet does not colour the chart
/// (`--promotional`, `--bundled`, `--paid` in console.css).
const PROMOTIONAL: &str = "#8b5cf6";
const BUNDLED: &str = "#0ea5e9";
const PAID: &str = "#10b981";
const DEBT: &str = "#f4a3ad";
const EXPIRY: &str = "#c2253a";
const RENEWAL: &str = "#137a43";

/// One ledger entry as the chart needs it.
#[derive(Clone, Debug)]
pub struct Point {
    pub kind: EntryKind,
    pub amount: Amount,
    pub balance_after: Amount,
    pub occurred_at: Instant,
    /// The grant's purpose; `None` for the debt's entries.
    pub purpose: Option<Purpose>,
    /// The grant's id as shown, for the markers' tooltips.
    pub grant: Option<String>,
}

/// Where each purpose (and the debt) stands, in atomic units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stack {
    pub promotional: i128,
    pub bundled: i128,
    pub paid: i128,
    pub debt: i128,
}

impl Stack {
    /// Applies one entry: its amount changes its grant's purpose, or minus
    /// the debt when it has no grant.
    pub fn apply(&mut self, purpose: Option<Purpose>, amount: Amount) {
        let amount = i128::from(amount.atomic());
        match purpose {
            Some(Purpose::Promotional) => self.promotional += amount,
            Some(Purpose::Bundled) => self.bundled += amount,
            Some(Purpose::Paid) => self.paid += amount,
            None => self.debt -= amount,
        }
    }

    /// The top of the positive stack.
    pub fn top(&self) -> i128 {
        self.promotional + self.bundled + self.paid
    }

    /// The balance: what the grants hold minus the debt.
    pub fn balance(&self) -> i128 {
        self.top() - self.debt
    }

    fn layers(&self) -> [i128; 3] {
        [self.paid, self.bundled, self.promotional]
    }
}

/// Where the stacks stood before `points`, given where they stand after the
/// last of them (now).
pub fn opening(now: Stack, points: &[Point]) -> Stack {
    let mut stack = now;
    for point in points {
        let mut inverse = Stack::default();
        inverse.apply(point.purpose, point.amount);
        stack.promotional -= inverse.promotional;
        stack.bundled -= inverse.bundled;
        stack.paid -= inverse.paid;
        stack.debt -= inverse.debt;
    }
    stack
}

/// The stacks after each entry, in order.
pub fn steps(opening: Stack, points: &[Point]) -> Vec<(Instant, Stack)> {
    let mut stack = opening;
    points
        .iter()
        .map(|point| {
            stack.apply(point.purpose, point.amount);
            (point.occurred_at, stack)
        })
        .collect()
}

/// What to draw.
pub struct Chart<'a> {
    /// Unique among the page's charts; used for element ids.
    pub id: &'a str,
    pub scale: Scale,
    pub unit: &'a str,
    /// The stacks before the first point.
    pub opening: Stack,
    /// Oldest first.
    pub points: &'a [Point],
    /// The right edge: the ledger's now.
    pub now: Instant,
}

/// Escapes text for SVG (XML) content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// An amount for an axis: grouped thousands, `k`/`M` for round large values.
fn axis_amount(atomic: i128, scale: Scale) -> String {
    let unit = i128::from(scale.unit());
    if atomic % unit == 0 {
        let whole = atomic / unit;
        for (factor, suffix) in [(1_000_000_000, "B"), (1_000_000, "M"), (1_000, "k")] {
            if whole.abs() >= factor && whole % (factor / 10) == 0 {
                let tenths = whole / (factor / 10);
                return if tenths % 10 == 0 {
                    format!("{}{suffix}", tenths / 10)
                } else {
                    format!("{}.{}{suffix}", tenths / 10, (tenths % 10).abs())
                };
            }
        }
    }
    amount_text(atomic, scale)
}

/// An amount in full, through `Amount::format` when it fits.
fn amount_text(atomic: i128, scale: Scale) -> String {
    match i64::try_from(atomic) {
        Ok(atomic) => super::customers::group(&Amount::from_atomic(atomic).format(scale)),
        Err(_) => atomic.to_string(),
    }
}

/// 1, 2, 2.5 or 5 times a power of ten (whole), at least `raw`, at least 1.
fn nice_step(raw: f64) -> i128 {
    if raw.is_nan() || raw <= 1.0 {
        return 1;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .filter(|s| s.fract() == 0.0)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    (step.round() as i128).max(1)
}

fn date_format(span_seconds: i64) -> &'static str {
    if span_seconds <= 2 * 86_400 {
        "%b %-d %H:%M"
    } else if span_seconds <= 400 * 86_400 {
        "%b %-d"
    } else {
        "%b %Y"
    }
}

struct Frame {
    t0: i64,
    t1: i64,
    low: i128,
    high: i128,
}

impl Frame {
    fn x(&self, at: Instant) -> f64 {
        let t = at.timestamp_millis().clamp(self.t0, self.t1);
        LEFT + (t - self.t0) as f64 / (self.t1 - self.t0) as f64 * (WIDTH - LEFT - RIGHT)
    }

    fn y(&self, value: i128) -> f64 {
        let value = value.clamp(self.low, self.high);
        TOP + (self.high - value) as f64 / (self.high - self.low) as f64 * (HEIGHT - TOP - BOTTOM)
    }
}

fn px(value: f64) -> String {
    let rounded = (value * 10.0).round() / 10.0;
    if rounded == rounded.trunc() {
        format!("{}", rounded as i64)
    } else {
        format!("{rounded:.1}")
    }
}

/// One band of a stacked step chart: `(x_start, x_end, lower, upper)` per
/// interval, as a closed path.
fn band(segments: &[(f64, f64, f64, f64)]) -> String {
    let mut path = String::new();
    let Some(first) = segments.first() else {
        return path;
    };
    let _ = write!(path, "M{} {}", px(first.0), px(first.3));
    for (x0, x1, _, upper) in segments {
        let _ = write!(
            path,
            "L{} {}L{} {}",
            px(*x0),
            px(*upper),
            px(*x1),
            px(*upper)
        );
    }
    for (x0, x1, lower, _) in segments.iter().rev() {
        let _ = write!(
            path,
            "L{} {}L{} {}",
            px(*x1),
            px(*lower),
            px(*x0),
            px(*lower)
        );
    }
    path.push('Z');
    path
}

/// The chart as an `<svg>` element.
pub fn render(chart: &Chart) -> String {
    let id = escape(chart.id);
    let states = steps(chart.opening, chart.points);
    let mut svg = String::new();
    let summary = describe(chart, &states);
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="chart balance-chart" viewBox="0 0 {w} {h}" role="img" aria-labelledby="{id}-title {id}-desc"><title id="{id}-title">Balance over time, by purpose</title><desc id="{id}-desc">{summary}</desc>"##,
        w = WIDTH,
        h = HEIGHT,
        summary = escape(&summary),
    );
    let Some(last) = chart.points.last() else {
        let _ = write!(
            svg,
            r##"<rect class="plot" x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="none" stroke="#e3e6eb" stroke-dasharray="4 4"/><text class="empty-label" x="{}" y="{}" text-anchor="middle" fill="#5d6470" font-size="13">No ledger entries yet: the chart starts with the first grant.</text></svg>"##,
            WIDTH - LEFT - RIGHT,
            HEIGHT - TOP - BOTTOM,
            px((WIDTH + LEFT - RIGHT) / 2.0),
            px((HEIGHT + TOP - BOTTOM) / 2.0),
        );
        return svg;
    };

    // Time runs from the first entry to now; a ledger that all happened in
    // one instant gets an hour so that it has width.
    // A little room after now keeps what happened just now visible.
    let t0 = chart.points[0].occurred_at.timestamp_millis();
    let now_ms = chart
        .now
        .timestamp_millis()
        .max(last.occurred_at.timestamp_millis());
    let span = (now_ms - t0).max(3_600_000);
    let t1 = t0 + span + span / 25;
    let peak = states
        .iter()
        .map(|(_, s)| s.top())
        .chain([chart.opening.top(), 0])
        .max()
        .unwrap_or(0);
    let deepest = states
        .iter()
        .map(|(_, s)| s.debt)
        .chain([chart.opening.debt, 0])
        .max()
        .unwrap_or(0);
    let range = (peak + deepest).max(i128::from(chart.scale.unit()));
    let step = nice_step(range as f64 / 5.0);
    let high = ((peak + step - 1) / step).max(1) * step;
    let low = -((deepest + step - 1) / step) * step;
    let frame = Frame { t0, t1, low, high };

    // Legend.
    let mut legend_x = LEFT;
    let has_debt = deepest > 0;
    let mut entries: Vec<(&str, &str, &str)> = vec![
        ("promotional", "Promotional", PROMOTIONAL),
        ("bundled", "Bundled", BUNDLED),
        ("paid", "Paid", PAID),
    ];
    if has_debt {
        entries.push(("debt", "Debt", DEBT));
    }
    svg.push_str(r##"<g class="legend-items" font-size="12" fill="#5d6470">"##);
    for (class, label, fill) in entries {
        let _ = write!(
            svg,
            r##"<rect class="s-{class}" x="{x}" y="12" width="11" height="11" rx="2" fill="{fill}"/><text x="{tx}" y="22">{label}</text>"##,
            x = px(legend_x),
            tx = px(legend_x + 16.0),
        );
        legend_x += 16.0 + label.len() as f64 * 7.0 + 16.0;
    }
    let _ = write!(
        svg,
        r##"<path class="m-expiry" d="M{a} 12L{b} 12L{c} 22Z" fill="{EXPIRY}"/><text x="{t}" y="22">Expiry</text>"##,
        a = px(legend_x),
        b = px(legend_x + 10.0),
        c = px(legend_x + 5.0),
        t = px(legend_x + 15.0),
    );
    legend_x += 15.0 + 6.0 * 7.0 + 16.0;
    let _ = write!(
        svg,
        r##"<path class="m-renewal" d="M{a} 22L{b} 22L{c} 12Z" fill="{RENEWAL}"/><text x="{t}" y="22">Renewal</text></g>"##,
        a = px(legend_x),
        b = px(legend_x + 10.0),
        c = px(legend_x + 5.0),
        t = px(legend_x + 15.0),
    );

    // Grid and the amount axis.
    svg.push_str(r##"<g class="grid" font-size="11" fill="#5d6470">"##);
    let mut value = low;
    while value <= high {
        let y = px(frame.y(value));
        let class = if value == 0 { "zero" } else { "line" };
        let stroke = if value == 0 { "#9aa1ad" } else { "#e3e6eb" };
        let _ = write!(
            svg,
            r##"<line class="{class}" x1="{LEFT}" x2="{x2}" y1="{y}" y2="{y}" stroke="{stroke}"/><text x="{tx}" y="{ty}" text-anchor="end">{label}</text>"##,
            x2 = px(WIDTH - RIGHT),
            tx = px(LEFT - 8.0),
            ty = px(frame.y(value) + 4.0),
            label = escape(&axis_amount(value, chart.scale)),
        );
        value += step;
    }
    // The time axis: five dates, evenly spaced.
    let format = date_format((t1 - t0) / 1000);
    for i in 0..5 {
        let t = t0 + (t1 - t0) * i / 4;
        let Some(at) = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(t) else {
            continue;
        };
        let anchor = match i {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        let x = frame.x(at);
        let _ = write!(
            svg,
            r##"<line x1="{x}" x2="{x}" y1="{y1}" y2="{y2}" stroke="#cfd4dc"/><text x="{x}" y="{ty}" text-anchor="{anchor}">{label}</text>"##,
            x = px(x),
            y1 = px(HEIGHT - BOTTOM),
            y2 = px(HEIGHT - BOTTOM + 4.0),
            ty = px(HEIGHT - BOTTOM + 17.0),
            label = escape(&at.format(format).to_string()),
        );
    }
    svg.push_str("</g>");

    // Collapse entries that happened at the same instant: what is drawn is
    // where the stacks stood after the last of them.
    let mut drawn: Vec<(f64, Stack)> = Vec::new();
    for (at, stack) in &states {
        let x = frame.x(*at);
        match drawn.last_mut() {
            Some((last_x, last)) if (*last_x - x).abs() < f64::EPSILON => *last = *stack,
            _ => drawn.push((x, *stack)),
        }
    }
    let right = WIDTH - RIGHT;
    let intervals: Vec<(f64, f64, Stack)> = drawn
        .iter()
        .enumerate()
        .map(|(i, (x, stack))| {
            let end = drawn.get(i + 1).map_or(right, |(next, _)| *next);
            (*x, end, *stack)
        })
        .filter(|(x0, x1, _)| x1 > x0)
        .collect();
    svg.push_str(r##"<g class="series">"##);
    for (layer, (class, fill)) in [
        ("paid", PAID),
        ("bundled", BUNDLED),
        ("promotional", PROMOTIONAL),
    ]
    .into_iter()
    .enumerate()
    {
        if intervals.iter().all(|(_, _, s)| s.layers()[layer] == 0) {
            continue;
        }
        let segments: Vec<(f64, f64, f64, f64)> = intervals
            .iter()
            .map(|(x0, x1, s)| {
                let below: i128 = s.layers()[..layer].iter().map(|v| (*v).max(0)).sum();
                let upper = below + s.layers()[layer].max(0);
                (*x0, *x1, frame.y(below), frame.y(upper))
            })
            .collect();
        let _ = write!(
            svg,
            r##"<path class="s-{class}" d="{d}" fill="{fill}" fill-opacity="0.85"/>"##,
            d = band(&segments)
        );
    }
    if has_debt {
        let segments: Vec<(f64, f64, f64, f64)> = intervals
            .iter()
            .map(|(x0, x1, s)| (*x0, *x1, frame.y(-s.debt.max(0)), frame.y(0)))
            .collect();
        let _ = write!(
            svg,
            r##"<path class="s-debt" d="{d}" fill="{DEBT}" fill-opacity="0.85"/>"##,
            d = band(&segments)
        );
    }
    // The balance itself, as a line along the top of the stack (or the
    // bottom of the debt).
    let mut line = String::new();
    for (i, (x0, x1, s)) in intervals.iter().enumerate() {
        let y = px(frame.y(s.balance()));
        let _ = if i == 0 {
            write!(line, "M{} {y}", px(*x0))
        } else {
            write!(line, "L{} {y}", px(*x0))
        };
        let _ = write!(line, "L{} {y}", px(*x1));
    }
    let _ = write!(
        svg,
        r##"<path class="balance-line" d="{line}" fill="none" stroke="#16181d" stroke-width="1.5"/></g>"##
    );

    // Now.
    let now_x = px(frame.x(chart.now));
    let _ = write!(
        svg,
        r##"<g class="now" font-size="11" fill="#5d6470"><line x1="{now_x}" x2="{now_x}" y1="{TOP}" y2="{bottom}" stroke="#5d6470" stroke-dasharray="1 3"/><text x="{now_x}" y="{ty}" text-anchor="end" dx="-3">now</text></g>"##,
        bottom = px(HEIGHT - BOTTOM),
        ty = px(TOP + 10.0),
    );
    // Markers: one per expiry and renewal entry.
    svg.push_str(r##"<g class="markers">"##);
    let plot_bottom = HEIGHT - BOTTOM;
    for point in chart.points {
        let (class, verb, colour) = match point.kind {
            EntryKind::Expiry => ("expiry", "Expired", EXPIRY),
            EntryKind::Renewal => ("renewal", "Renewed", RENEWAL),
            _ => continue,
        };
        let x = frame.x(point.occurred_at);
        let tip = format!(
            "{verb} {} {} on {}{}",
            amount_text(i128::from(point.amount.atomic()).abs(), chart.scale),
            chart.unit,
            point.occurred_at.format("%Y-%m-%d %H:%M UTC"),
            point
                .grant
                .as_deref()
                .map(|g| format!(" ({g})"))
                .unwrap_or_default(),
        );
        let triangle = if point.kind == EntryKind::Expiry {
            format!(
                "M{} {}L{} {}L{} {}Z",
                px(x - 5.0),
                px(TOP - 9.0),
                px(x + 5.0),
                px(TOP - 9.0),
                px(x),
                px(TOP)
            )
        } else {
            format!(
                "M{} {}L{} {}L{} {}Z",
                px(x - 5.0),
                px(plot_bottom + 1.0),
                px(x + 5.0),
                px(plot_bottom + 1.0),
                px(x),
                px(plot_bottom - 8.0)
            )
        };
        let _ = write!(
            svg,
            r##"<g class="marker {class}"><title>{tip}</title><line x1="{x}" x2="{x}" y1="{TOP}" y2="{plot_bottom}" stroke="{colour}" stroke-dasharray="3 3" stroke-opacity="0.7"/><path d="{triangle}" fill="{colour}"/></g>"##,
            tip = escape(&tip),
            x = px(x),
        );
    }
    svg.push_str("</g>");
    svg.push_str("</svg>");
    svg
}

/// The text alternative: the span, where the balance stands, and how many
/// expiries and renewals the chart marks.
fn describe(chart: &Chart, states: &[(Instant, Stack)]) -> String {
    let (Some(first), Some(last), Some((_, now))) =
        (chart.points.first(), chart.points.last(), states.last())
    else {
        return "No ledger entries yet.".to_string();
    };
    let count = |kind| chart.points.iter().filter(|p| p.kind == kind).count();
    let amount = |v| amount_text(v, chart.scale);
    format!(
        "From {} to {}. Balance now {} {unit}: promotional {}, bundled {}, paid {}{}. {} expiries and {} renewals marked.",
        first.occurred_at.format("%Y-%m-%d"),
        chart.now.format("%Y-%m-%d"),
        amount(i128::from(last.balance_after.atomic())),
        amount(now.promotional),
        amount(now.bundled),
        amount(now.paid),
        if now.debt > 0 {
            format!(", debt {}", amount(now.debt))
        } else {
            String::new()
        },
        count(EntryKind::Expiry),
        count(EntryKind::Renewal),
        unit = chart.unit,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn at(day: u32, hour: u32) -> Instant {
        Utc.with_ymd_and_hms(2025, 1, day, hour, 0, 0).unwrap()
    }

    /// Builds points from (day, kind, purpose, amount), computing each
    /// balance_after as the ledger would.
    fn ledger(rows: &[(u32, EntryKind, Option<Purpose>, i64)]) -> Vec<Point> {
        let mut balance = 0;
        rows.iter()
            .map(|(day, kind, purpose, amount)| {
                balance += amount;
                Point {
                    kind: *kind,
                    amount: Amount::from_atomic(*amount),
                    balance_after: Amount::from_atomic(balance),
                    occurred_at: at(*day, 10),
                    purpose: *purpose,
                    grant: purpose.map(|_| "gr_01TEST".to_string()),
                }
            })
            .collect()
    }

    fn chart<'a>(points: &'a [Point], unit: &'a str) -> Chart<'a> {
        Chart {
            id: "chart-wal_1",
            scale: Scale::new(2).unwrap(),
            unit,
            opening: Stack::default(),
            points,
            now: at(31, 10),
        }
    }

    use EntryKind::*;
    use Purpose::*;

    fn sample() -> Vec<Point> {
        ledger(&[
            (1, Grant, Some(Promotional), 5000),
            (1, Grant, Some(Bundled), 10000),
            (2, Grant, Some(Paid), 2500),
            (3, Debit, Some(Promotional), -3000),
            (5, Expiry, Some(Promotional), -2000),
            (8, Expiry, Some(Bundled), -1000),
            (8, Renewal, Some(Bundled), 10000),
            (9, Debit, Some(Bundled), -19000),
            (9, Debit, Some(Paid), -2500),
            (9, Debit, None, -700),
            (10, Grant, Some(Paid), 1000),
            (10, Repayment, Some(Paid), -700),
            (10, Repayment, None, 700),
            (15, Renewal, Some(Bundled), 10000),
            (20, Void, Some(Paid), -300),
        ])
    }

    #[test]
    fn the_stacked_tops_less_the_debt_are_the_balance_after_each_entry() {
        let points = sample();
        let states = steps(Stack::default(), &points);
        assert_eq!(states.len(), points.len());
        for ((_, stack), point) in states.iter().zip(&points) {
            assert_eq!(stack.balance(), i128::from(point.balance_after.atomic()));
            if stack.debt == 0 {
                assert_eq!(stack.top(), i128::from(point.balance_after.atomic()));
            }
        }
        let debt = states.iter().find(|(_, s)| s.debt > 0).unwrap().1;
        assert_eq!(debt.debt, 700);
        assert_eq!(debt.top(), 0);
    }

    #[test]
    fn the_opening_is_recovered_from_where_the_stacks_stand_now() {
        let points = sample();
        let all = steps(Stack::default(), &points);
        let now = all.last().unwrap().1;
        // Only the last five entries are shown: the opening is where the
        // stacks stood after the tenth.
        let shown = &points[10..];
        assert_eq!(opening(now, shown), all[9].1);
        let states = steps(opening(now, shown), shown);
        for ((_, stack), point) in states.iter().zip(shown) {
            assert_eq!(stack.balance(), i128::from(point.balance_after.atomic()));
        }
    }

    #[test]
    fn one_marker_per_expiry_and_renewal_entry() {
        let points = sample();
        let svg = render(&chart(&points, "tokens"));
        assert_eq!(svg.matches(r##"class="marker expiry""##).count(), 2);
        assert_eq!(svg.matches(r##"class="marker renewal""##).count(), 2);
        assert!(svg.contains("Expired 20 tokens on 2025-01-05 10:00 UTC"));
        assert!(svg.contains("Renewed 100 tokens on 2025-01-08 10:00 UTC"));
        // The debt is drawn below zero, and shows in the legend.
        assert!(svg.contains(r##"class="s-debt""##));
        assert!(svg.contains(">Debt</text>"));
        for class in ["s-promotional", "s-bundled", "s-paid"] {
            assert!(
                svg.contains(&format!(r##"<path class="{class}""##)),
                "{class}"
            );
        }
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains(r##"aria-labelledby="chart-wal_1-title chart-wal_1-desc""##));
        assert!(svg.contains("2 expiries and 2 renewals marked."));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn an_empty_ledger_says_so() {
        let svg = render(&chart(&[], "tokens"));
        assert!(svg.contains("No ledger entries yet"));
        assert!(!svg.contains("marker"));
        assert!(svg.contains("<title id=\"chart-wal_1-title\">"));
        assert!(svg.ends_with("</svg>"));
    }

    #[test]
    fn a_single_entry_draws_a_finite_chart() {
        let points = ledger(&[(31, Grant, Some(Paid), 12345)]);
        let svg = render(&chart(&points, "credits"));
        assert!(svg.contains(r##"<path class="s-paid""##));
        assert!(!svg.contains(r##"<path class="s-bundled""##));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        assert!(svg.contains("Balance now 123.45 credits"));
        assert!(!svg.contains("s-debt"));
    }

    #[test]
    fn text_is_escaped() {
        let points = ledger(&[(1, Expiry, Some(Paid), -100)]);
        let mut c = chart(&points, "<b>\"tok\"</b>");
        c.opening = Stack {
            paid: 100,
            ..Stack::default()
        };
        c.id = "x\"><script>";
        let svg = render(&c);
        assert!(!svg.contains("<b>"));
        assert!(!svg.contains("<script>"));
        assert!(svg.contains("&lt;b&gt;&quot;tok&quot;&lt;/b&gt;"));
    }

    #[test]
    fn axis_amounts_are_compact_and_exact() {
        let two = Scale::new(2).unwrap();
        assert_eq!(axis_amount(0, two), "0");
        assert_eq!(axis_amount(150, two), "1.5");
        assert_eq!(axis_amount(100_000_000, two), "1M");
        assert_eq!(axis_amount(250_000, two), "2.5k");
        assert_eq!(axis_amount(-500_000, two), "-5k");
        assert_eq!(nice_step(0.3), 1);
        assert_eq!(nice_step(3.0), 5);
        assert_eq!(nice_step(2.2), 5);
        assert_eq!(nice_step(1200.0), 2000);
        assert_eq!(nice_step(2100.0), 2500);
    }
}

//! Instants and calendar periods. Every renewal instant is computed from the
//! anchor (`anchor + k·period`), never by adding to the previous renewal, so
//! month ends stay month ends: Jan 31 → Feb 28 → Mar 31 → Apr 30.

use chrono::{DateTime, Duration, Months, Utc};

/// An instant in UTC, microsecond precision. The core never reads a clock:
/// every function that depends on time takes `now` as an argument.
pub type Instant = DateTime<Utc>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Interval {
    Day,
    Week,
    Month,
    Year,
}

impl Interval {
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Day => "day",
            Interval::Week => "week",
            Interval::Month => "month",
            Interval::Year => "year",
        }
    }

    pub fn parse(text: &str) -> Option<Interval> {
        match text {
            "day" => Some(Interval::Day),
            "week" => Some(Interval::Week),
            "month" => Some(Interval::Month),
            "year" => Some(Interval::Year),
            _ => None,
        }
    }
}

/// A calendar period such as "3 months". `count` is 1..=[`Period::COUNT_MAX`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Period {
    pub interval: Interval,
    pub count: u32,
}

impl Period {
    /// Bounds every period to at most 1000 intervals, which keeps every
    /// instant computed from it far inside chrono's range.
    pub const COUNT_MAX: u32 = 1000;

    pub fn new(interval: Interval, count: u32) -> Option<Period> {
        (1..=Self::COUNT_MAX)
            .contains(&count)
            .then_some(Period { interval, count })
    }

    /// `anchor + k·period`, clamping to the month's last day where the day
    /// does not exist. `None` only past the year 262143.
    pub fn nth_after(self, anchor: Instant, k: u64) -> Option<Instant> {
        let steps = k.checked_mul(u64::from(self.count))?;
        match self.interval {
            Interval::Day => add_days(anchor, steps),
            Interval::Week => add_days(anchor, steps.checked_mul(7)?),
            Interval::Month => add_months(anchor, steps),
            Interval::Year => add_months(anchor, steps.checked_mul(12)?),
        }
    }
}

fn add_days(anchor: Instant, days: u64) -> Option<Instant> {
    let days = i64::try_from(days).ok()?;
    anchor.checked_add_signed(Duration::try_days(days)?)
}

fn add_months(anchor: Instant, months: u64) -> Option<Instant> {
    let months = u32::try_from(months).ok()?;
    anchor.checked_add_months(Months::new(months))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Instant {
        text.parse().unwrap()
    }

    #[test]
    fn monthly_from_jan_31_keeps_month_ends() {
        let monthly = Period::new(Interval::Month, 1).unwrap();
        let anchor = at("2025-01-31T10:00:00Z");
        let expected = [
            "2025-02-28T10:00:00Z",
            "2025-03-31T10:00:00Z",
            "2025-04-30T10:00:00Z",
            "2025-05-31T10:00:00Z",
        ];
        for (k, want) in expected.iter().enumerate() {
            assert_eq!(monthly.nth_after(anchor, k as u64 + 1), Some(at(want)));
        }
        let leap = at("2024-01-31T00:00:00Z");
        assert_eq!(monthly.nth_after(leap, 1), Some(at("2024-02-29T00:00:00Z")));
    }

    #[test]
    fn other_intervals() {
        let anchor = at("2024-02-29T12:00:00Z");
        let year = Period::new(Interval::Year, 1).unwrap();
        assert_eq!(year.nth_after(anchor, 1), Some(at("2025-02-28T12:00:00Z")));
        assert_eq!(year.nth_after(anchor, 4), Some(at("2028-02-29T12:00:00Z")));
        let fortnight = Period::new(Interval::Week, 2).unwrap();
        assert_eq!(
            fortnight.nth_after(anchor, 1),
            Some(at("2024-03-14T12:00:00Z"))
        );
        let day = Period::new(Interval::Day, 1).unwrap();
        assert_eq!(day.nth_after(anchor, 0), Some(anchor));
        assert_eq!(day.nth_after(anchor, u64::MAX), None);
        assert!(Period::new(Interval::Day, 0).is_none());
    }
}

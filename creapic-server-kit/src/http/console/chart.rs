//! The credits page's usage chart: credits spent per UTC day as bars, drawn by the server.
//!
//! This module turns the core's [`DailyUsage`] rows into geometry (the bars' rectangles, the
//! scale, the date labels) and the text alternative (a description and one row per day); the
//! template (`credits.html`) writes it out as an inline `<svg>`. Inline SVG is markup, not
//! script or style, so the console's Content-Security-Policy allows it; its colours come from
//! classes in `console.css` and presentation attributes, never `style=`.
//!
//! Every day of the range has a bar, days without use a bar of height zero (the text
//! alternative says 0): a missing day would read as "no data" rather than "nothing spent".

use creapic_core::ledger::DailyUsage;

/// The chart's width in SVG units (it scales to the page's width).
pub const WIDTH: u32 = 720;
/// The chart's height in SVG units.
pub const HEIGHT: u32 = 150;
/// Left margin: the scale's labels.
const LEFT: u32 = 48;
/// Bottom margin: the date labels.
const BOTTOM: u32 = 24;
/// Top margin: room for the top label.
const TOP: u32 = 12;
/// Right margin.
const RIGHT: u32 = 8;
/// A date label under every this many days (the first day always has one).
const LABEL_EVERY_DAYS: usize = 7;

/// One day's bar.
#[derive(Debug, Clone)]
pub struct Bar {
    /// The day, `YYYY-MM-DD`.
    pub day: String,
    /// Credits spent that day.
    pub spent: u64,
    /// Credits granted that day.
    pub granted: u64,
    /// Credits released (refunded) that day.
    pub released: u64,
    /// The rectangle, in SVG units.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height (0 for a day without use).
    pub height: u32,
}

/// A date label under the bars.
#[derive(Debug, Clone)]
pub struct Label {
    /// Its centre.
    pub x: u32,
    /// `MM-DD`.
    pub text: String,
}

/// The whole chart.
#[derive(Debug, Clone)]
pub struct Chart {
    /// `0 0 WIDTH HEIGHT`.
    pub view_box: String,
    /// One bar per day, oldest first.
    pub bars: Vec<Bar>,
    /// Date labels.
    pub labels: Vec<Label>,
    /// The value the top line stands for (at least 1).
    pub top: u64,
    /// The plot's left edge, top line and baseline, in SVG units.
    pub left: u32,
    /// The plot's right edge.
    pub right: u32,
    /// The top line's y.
    pub top_y: u32,
    /// The baseline's y.
    pub base_y: u32,
    /// Where the bottom labels sit.
    pub label_y: u32,
    /// One sentence: the range, the total and the busiest day.
    pub description: String,
}

/// The chart of `days` (every day of the range, oldest first, as `DayRange::fill` gives them).
pub fn usage(days: &[DailyUsage]) -> Chart {
    let top = days.iter().map(|d| d.spent.get()).max().unwrap_or(0).max(1);
    let plot_width = WIDTH - LEFT - RIGHT;
    let base_y = HEIGHT - BOTTOM;
    let plot_height = base_y - TOP;
    let n = u32::try_from(days.len()).unwrap_or(u32::MAX).max(1);
    let slot = plot_width / n;
    let width = (slot * 7 / 10).max(1);
    let bars: Vec<Bar> = days
        .iter()
        .zip(0u32..)
        .map(|(d, i)| {
            let spent = d.spent.get();
            // spent ≤ top, so the height is at most the plot's: the product fits a u64.
            let height = u32::try_from(spent.saturating_mul(u64::from(plot_height)) / top)
                .unwrap_or(plot_height);
            Bar {
                day: day_text(d),
                spent,
                granted: d.granted.get(),
                released: d.released.get(),
                x: LEFT + i * slot + (slot - width) / 2,
                y: base_y - height,
                width,
                height,
            }
        })
        .collect();
    let labels = bars
        .iter()
        .enumerate()
        .filter(|(i, _)| i % LABEL_EVERY_DAYS == 0)
        .map(|(_, b)| Label {
            x: b.x + b.width / 2,
            text: b.day.get(5..).unwrap_or(&b.day).to_owned(),
        })
        .collect();
    Chart {
        view_box: format!("0 0 {WIDTH} {HEIGHT}"),
        description: describe(&bars),
        bars,
        labels,
        top,
        left: LEFT,
        right: WIDTH - RIGHT,
        top_y: TOP,
        base_y,
        label_y: HEIGHT - 6,
    }
}

/// `YYYY-MM-DD` of a day.
fn day_text(d: &DailyUsage) -> String {
    d.day.to_rfc3339().get(..10).unwrap_or_default().to_owned()
}

/// "From A to B: N credits spent in all; the most, M, on D." (or "none spent").
fn describe(bars: &[Bar]) -> String {
    let (Some(first), Some(last)) = (bars.first(), bars.last()) else {
        return "No days to show.".to_owned();
    };
    let total: u64 = bars.iter().map(|b| b.spent).sum();
    let busiest = bars
        .iter()
        .rev()
        .max_by_key(|b| b.spent)
        .filter(|b| b.spent > 0);
    match busiest {
        Some(b) => format!(
            "From {} to {}: {total} credits spent in all; the most, {}, on {}.",
            first.day, last.day, b.spent, b.day
        ),
        None => format!("From {} to {}: no credits spent.", first.day, last.day),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use creapic_core::clock::Timestamp;
    use creapic_core::ledger::{Credits, DAY_MS};

    fn day(i: i64, spent: u64) -> DailyUsage {
        DailyUsage {
            day: Timestamp::from_unix_ms(20_000 * DAY_MS + i * DAY_MS),
            spent: Credits::new(spent).unwrap(),
            granted: Credits::ZERO,
            released: Credits::ZERO,
        }
    }

    #[test]
    fn bars_scale_to_the_busiest_day_and_zero_days_stay_flat() {
        let days: Vec<_> = (0..30)
            .map(|i| day(i, if i == 29 { 8 } else { i as u64 % 3 }))
            .collect();
        let chart = usage(&days);
        assert_eq!(chart.bars.len(), 30);
        assert_eq!(chart.top, 8);
        let last = &chart.bars[29];
        assert_eq!(
            last.height,
            chart.base_y - chart.top_y,
            "the busiest day fills the plot"
        );
        assert_eq!(last.y, chart.top_y);
        assert_eq!(chart.bars[0].height, 0, "a day without use has no height");
        assert_eq!(chart.bars[0].y, chart.base_y);
        assert!(
            chart.bars.windows(2).all(|w| w[0].x + w[0].width < w[1].x),
            "no overlap"
        );
        assert!(last.x + last.width <= chart.right);
        assert_eq!(chart.labels.len(), 5);
        assert!(
            chart.description.contains("the most, 8, on"),
            "{}",
            chart.description
        );
    }

    #[test]
    fn a_range_without_use_says_so() {
        let chart = usage(&[day(0, 0), day(1, 0)]);
        assert_eq!(chart.top, 1);
        assert!(chart.bars.iter().all(|b| b.height == 0));
        assert!(
            chart.description.ends_with("no credits spent."),
            "{}",
            chart.description
        );
    }
}

//! The timeline chart: active staff devices per post over time, with a marker at each
//! enrolment and revocation and a vertical line at each authority rotation. Drawn as SVG by
//! `plotters` (no browser engine, no script), with a `<title>` and `<desc>` for screen readers;
//! the entries table under it carries the same facts as text.

use super::i18n::{Catalogue, Msg};
use super::{Action, Report};
use plotters::prelude::*;

pub const WIDTH: u32 = 900;
pub const HEIGHT: u32 = 340;

/// Okabe–Ito colours, distinguishable with the common colour-vision deficiencies.
const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(240, 228, 66),
];
const REVOKE: RGBColor = RGBColor(180, 20, 20);
const ROTATE: RGBColor = RGBColor(110, 60, 160);

/// One change of a post's active devices: (day, active devices after it, what changed).
type Step = (i64, i64, Action);

/// The Julian day number of 1970-01-01.
const EPOCH_JULIAN_DAY: i32 = 2_440_588;

/// Days since 1970-01-01 of a `YYYY-MM-DD` day written by [`super::day`].
fn day_number(day: &str) -> Option<i64> {
    let mut parts = day.splitn(3, '-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    let month = time::Month::try_from(m.parse::<u8>().ok()?).ok()?;
    let date = time::Date::from_calendar_date(y.parse().ok()?, month, d.parse().ok()?).ok()?;
    Some(i64::from(date.to_julian_day() - EPOCH_JULIAN_DAY))
}

fn day_label(n: i64) -> String {
    let julian = i32::try_from(n + i64::from(EPOCH_JULIAN_DAY)).ok();
    julian
        .and_then(|j| time::Date::from_julian_day(j).ok())
        .map_or_else(String::new, |d| d.to_string())
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The accessible description: how many of each event, over which days.
pub fn description(report: &Report, words: &Catalogue) -> String {
    let count = |a: Action| report.entries.iter().filter(|e| e.action == a).count();
    let first = report.entries.first().map_or("-", |e| e.day.as_str());
    let last = report.entries.last().map_or("-", |e| e.day.as_str());
    words.fill(
        Msg::ChartDesc,
        &[
            ("e", &count(Action::Enrol).to_string()),
            ("r", &count(Action::Revoke).to_string()),
            ("a", &count(Action::Rotate).to_string()),
            ("from", first),
            ("to", last),
        ],
    )
}

/// The chart as an SVG element, with `role="img"`, a title and a description.
pub fn svg(report: &Report, words: &Catalogue) -> Result<String, String> {
    let events: Vec<(i64, &super::EntryRecord)> = report
        .entries
        .iter()
        .filter_map(|e| day_number(&e.day).map(|d| (d, e)))
        .collect();
    let today = day_number(&super::day(report.generated_unix)).unwrap_or(0);
    let first = events.iter().map(|(d, _)| *d).min().unwrap_or(today);
    let last = events
        .iter()
        .map(|(d, _)| *d)
        .max()
        .unwrap_or(today)
        .max(today);
    let pad = ((last - first) / 20).max(2);
    let (x0, x1) = (first - pad, last + pad);

    // Each post's active count after each of its events.
    let mut series: Vec<(String, Vec<Step>)> = Vec::new();
    for (d, e) in &events {
        let Some(post) = &e.post else { continue };
        let pos = match series.iter().position(|(p, _)| p == post) {
            Some(p) => p,
            None => {
                series.push((post.clone(), Vec::new()));
                series.len() - 1
            }
        };
        let points = &mut series[pos].1;
        let before = points.last().map_or(0, |p| p.1);
        let after = if e.action == Action::Enrol {
            before + 1
        } else {
            before - 1
        };
        points.push((*d, after, e.action));
    }
    // Two units of headroom above the highest count keep the legend (upper left) off the lines.
    let y_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.1))
        .max()
        .unwrap_or(0)
        + 2;

    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| format!("cannot draw the timeline: {e}");
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(34)
            .y_label_area_size(40)
            .build_cartesian_2d(x0..x1, 0i64..y_max)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_labels(6)
            .y_labels(usize::try_from(y_max + 1).unwrap_or(10).min(10))
            .x_label_formatter(&|d| day_label(*d))
            .y_label_formatter(&|n| n.to_string())
            .label_style(("sans-serif", 15))
            .draw()
            .map_err(|e| err(&e))?;
        for (i, (post, points)) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let mut line = vec![(x0, 0)];
            let mut level = 0;
            for (d, after, _) in points {
                line.push((*d, level));
                line.push((*d, *after));
                level = *after;
            }
            line.push((x1, level));
            chart
                .draw_series(LineSeries::new(line, color.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(post.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart
                .draw_series(
                    points
                        .iter()
                        .filter(|p| p.2 == Action::Enrol)
                        .map(|(d, n, _)| TriangleMarker::new((*d, *n), 6, color.filled())),
                )
                .map_err(|e| err(&e))?;
            chart
                .draw_series(
                    points
                        .iter()
                        .filter(|p| p.2 == Action::Revoke)
                        .map(|(d, n, _)| Cross::new((*d, *n), 6, REVOKE.stroke_width(2))),
                )
                .map_err(|e| err(&e))?;
        }
        // The markers' meaning, once each, in the legend.
        chart
            .draw_series(std::iter::empty::<TriangleMarker<(i64, i64), i32>>())
            .map_err(|e| err(&e))?
            .label(words.get(Msg::LegendEnrol))
            .legend(|(x, y)| TriangleMarker::new((x + 9, y), 6, BLACK.filled()));
        chart
            .draw_series(std::iter::empty::<Cross<(i64, i64), i32>>())
            .map_err(|e| err(&e))?
            .label(words.get(Msg::LegendRevoke))
            .legend(|(x, y)| Cross::new((x + 9, y), 6, REVOKE.stroke_width(2)));
        let rotations: Vec<i64> = events
            .iter()
            .filter(|(_, e)| e.action == Action::Rotate)
            .map(|(d, _)| *d)
            .collect();
        chart
            .draw_series(
                rotations
                    .iter()
                    .map(|d| PathElement::new(vec![(*d, 0), (*d, y_max)], ROTATE.stroke_width(2))),
            )
            .map_err(|e| err(&e))?
            .label(words.get(Msg::LegendRotate))
            .legend(|(x, y)| PathElement::new(vec![(x + 9, y - 7), (x + 9, y + 7)], ROTATE));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.4))
            .label_font(("sans-serif", 15))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    let open_end = out.find('>').ok_or("the chart is not an SVG element")?;
    let head = format!(
        " role=\"img\" aria-labelledby=\"chart-title chart-desc\"><title id=\"chart-title\">{}</title><desc id=\"chart-desc\">{}</desc>",
        xml_escape(words.get(Msg::ChartTitle)),
        xml_escape(&description(report, words)),
    );
    out.replace_range(open_end..=open_end, &head);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_trip() {
        for day in ["1970-01-01", "2023-11-14", "2026-12-05"] {
            let n = day_number(day).expect("a day");
            assert_eq!(day_label(n), day);
        }
        assert_eq!(day_number("1970-01-02"), Some(1));
        assert_eq!(day_number("not a day"), None);
    }
}

//! The publishing steps of reports drawn as one SVG: deliveries per second demanded against p50
//! and p99 latency, one colour per server (p99 solid, p50 dashed), on a log latency axis with
//! the 50 ms and 500 ms bounds drawn. `--plot` draws the run just made; `plot` draws saved JSON
//! reports, so the figures quoted in docs/benchmarks.md can be drawn again from their files.
//!
//! plotters runs without default features: its SVG backend writes text as `<text>` elements
//! and estimates their size without font files, so nothing is needed from the system.

use std::path::Path;

use anyhow::{Context, Result, bail};
use plotters::prelude::*;

use crate::args::PlotArgs;
use crate::report::{Report, Step};

/// The latency bounds drawn across the plot, in milliseconds.
const BOUNDS_MS: [f64; 2] = [50.0, 500.0];

/// The lowest latency the axis shows: histograms record whole microseconds, and a log axis
/// cannot reach zero.
const FLOOR_MS: f64 = 0.05;

/// One server's steps, in the order of their demanded rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    /// `(deliveries per second demanded, p50 ms, p99 ms)`.
    pub points: Vec<(f64, f64, f64)>,
}

/// The series of every run of `report` that has steps, labelled by system (and `suffix`).
pub fn series(report: &Report, suffix: Option<&str>) -> Vec<Series> {
    report
        .runs
        .iter()
        .filter(|run| !run.steps.is_empty())
        .map(|run| {
            let mut points: Vec<_> = run
                .steps
                .iter()
                .map(|step| {
                    (
                        demanded(step),
                        step.latency.p50_ms.max(FLOOR_MS),
                        step.latency.p99_ms.max(FLOOR_MS),
                    )
                })
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series {
                label: match suffix {
                    Some(suffix) => format!("{} ({suffix})", run.label()),
                    None => run.label(),
                },
                points,
            }
        })
        .collect()
}

/// Deliveries per second a step demanded; for reports written before the field existed, the
/// rate times the fan-out the step's counts show.
fn demanded(step: &Step) -> f64 {
    if step.demanded_per_second > 0.0 {
        step.demanded_per_second
    } else if step.accepted > 0 {
        step.rate * step.expected as f64 / step.accepted as f64
    } else {
        step.rate
    }
}

/// `--plot`: the run's publishing steps, or its scale-out's connections per node over time.
///
/// # Errors
/// When the run has neither, or the file cannot be written.
pub fn report(path: &Path, report: &Report) -> Result<()> {
    let title = format!("wsgate-bench {} ({} CPUs)", report.scenario, report.cpus);
    if let Some(scale) = report.runs.iter().find_map(|run| run.scale.as_ref()) {
        let svg = timeline_svg(&title, scale)?;
        return std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()));
    }
    write(path, &title, &series(report, None))
}

/// `plot`: reads the reports and writes one SVG of all their steps (or, for one `scale`
/// report, its connections per node over time).
///
/// # Errors
/// When a report cannot be read or holds no steps, or the SVG cannot be written.
pub fn from_files(args: &PlotArgs) -> Result<()> {
    if let [path] = args.reports.as_slice() {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let one: Report = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a wsgate-bench --json report", path.display()))?;
        if let Some(scale) = one.runs.iter().find_map(|run| run.scale.as_ref()) {
            let title = args
                .title
                .clone()
                .unwrap_or_else(|| format!("wsgate-bench scale ({} CPUs)", one.cpus));
            let svg = timeline_svg(&title, scale)?;
            return std::fs::write(&args.out, svg)
                .with_context(|| format!("writing {}", args.out.display()));
        }
    }
    let mut all = Vec::new();
    let mut scenarios = Vec::new();
    for path in &args.reports {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let report: Report = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a wsgate-bench --json report", path.display()))?;
        let suffix = (args.reports.len() > 1).then(|| {
            path.file_stem().map_or_else(
                || path.display().to_string(),
                |s| s.to_string_lossy().into(),
            )
        });
        all.extend(series(&report, suffix.as_deref()));
        if !scenarios.contains(&report.scenario) {
            scenarios.push(report.scenario);
        }
    }
    let title = args
        .title
        .clone()
        .unwrap_or_else(|| format!("wsgate-bench {}", scenarios.join(", ")));
    write(&args.out, &title, &all)
}

/// Writes `series` as an SVG plot to `path`.
///
/// # Errors
/// When there is nothing to draw or the file cannot be written.
pub fn write(path: &Path, title: &str, series: &[Series]) -> Result<()> {
    let svg = svg(title, series)?;
    std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))
}

/// The SVG text of the plot.
///
/// # Errors
/// When no series has a point.
pub fn svg(title: &str, series: &[Series]) -> Result<String> {
    let points = || series.iter().flat_map(|s| s.points.iter());
    if points().next().is_none() {
        bail!("no publishing steps to plot (only `fanout` and `direct` have them)");
    }
    let x_max = points().map(|p| p.0).fold(0.0, f64::max) * 1.05;
    let y_max = points()
        .map(|p| p.2)
        .chain(BOUNDS_MS)
        .fold(FLOOR_MS, f64::max)
        * 2.0;
    let y_min = points()
        .map(|p| p.1)
        .fold(f64::INFINITY, f64::min)
        .max(FLOOR_MS)
        / 2.0;

    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (960, 600)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart =
            frame(&root, title).build_cartesian_2d(0.0..x_max, (y_min..y_max).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("deliveries per second demanded")
            .y_desc("latency, ms (log scale)")
            .x_label_formatter(&|x| thousands(*x))
            .y_label_formatter(&|y| format!("{y}"))
            .draw()?;

        for bound in BOUNDS_MS {
            let grey = RGBColor(120, 120, 120);
            chart
                .draw_series(DashedLineSeries::new(
                    [(0.0, bound), (x_max, bound)],
                    4,
                    4,
                    grey.stroke_width(1),
                ))?
                .label(format!("{bound} ms bound"))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], grey));
        }

        for (index, one) in series.iter().enumerate() {
            let colour = Palette99::pick(index).to_rgba();
            let p99: Vec<_> = one.points.iter().map(|p| (p.0, p.2)).collect();
            let p50: Vec<_> = one.points.iter().map(|p| (p.0, p.1)).collect();
            chart
                .draw_series(LineSeries::new(p99.clone(), colour.stroke_width(2)))?
                .label(format!("{} p99", one.label))
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2))
                });
            chart.draw_series(p99.iter().map(|p| Circle::new(*p, 3, colour.filled())))?;
            chart
                .draw_series(DashedLineSeries::new(p50, 6, 3, colour.stroke_width(1)))?
                .label(format!("{} p50", one.label))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour));
        }

        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    Ok(out)
}

/// The SVG text of a scale-out: each node's connections over time, and when the gateways
/// were added.
///
/// # Errors
/// When there are no samples.
pub fn timeline_svg(title: &str, scale: &crate::scale::Figures) -> Result<String> {
    let Some(last) = scale.timeline.last() else {
        bail!("the scale-out has no samples to plot");
    };
    let x_max = last.seconds.max(1.0);
    let y_max = scale
        .timeline
        .iter()
        .flat_map(|sample| sample.connections.iter().flatten())
        .copied()
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.1;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (960, 540)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = frame(&root, title).build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("connections per node")
            .y_label_formatter(&|y| thousands(*y))
            .draw()?;
        let grey = RGBColor(120, 120, 120);
        let added = scale.added_at_seconds;
        chart
            .draw_series(DashedLineSeries::new(
                [(added, 0.0), (added, y_max)],
                4,
                4,
                grey.stroke_width(1),
            ))?
            .label("gateways added")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], grey));
        for (index, node) in scale.nodes.iter().enumerate() {
            let colour = Palette99::pick(index).to_rgba();
            let points: Vec<(f64, f64)> = scale
                .timeline
                .iter()
                .filter_map(|sample| {
                    let count = (*sample.connections.get(index)?)?;
                    Some((sample.seconds, count as f64))
                })
                .collect();
            chart
                .draw_series(LineSeries::new(points, colour.stroke_width(2)))?
                .label(node.clone())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    Ok(out)
}

/// A chart's frame: its title and the room its axis labels take.
fn frame<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    title: &'a str,
) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72);
    builder
}

/// `1234567` as `1,234,567`.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::{report, run, step, whole};

    #[test]
    fn each_server_is_one_series_in_demanded_order_with_a_floor_for_zero_latency() {
        let report = report(&whole(&[
            run(
                "wsgate",
                &[
                    step(200.0, 2000, 20, Some(20_000.0), 4.0),
                    step(100.0, 1000, 10, Some(10_000.0), 2.0),
                ],
            ),
            run("nats", &[step(100.0, 1000, 10, Some(10_000.0), 3.0)]),
        ]));
        let all = series(&report, None);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].label, "wsgate");
        assert_eq!(
            all[0].points,
            vec![(10_000.0, FLOOR_MS, 2.0), (20_000.0, FLOOR_MS, 4.0)]
        );
        assert_eq!(all[1].label, "nats");
    }

    /// Runs in the Pusher protocol name it, so wsgate's Pusher line and Sockudo's read as one
    /// protocol, and wsgate's native line stays `wsgate`; the JSON carries the protocol.
    #[test]
    fn pusher_runs_are_labelled_with_their_protocol() {
        let mut report = report(&whole(&[
            run("wsgate", &[step(100.0, 1000, 10, Some(10_000.0), 2.0)]),
            run("sockudo", &[step(100.0, 1000, 10, Some(10_000.0), 3.0)]),
        ]));
        for run in &mut report.runs {
            run.protocol = Some(crate::client::Protocol::Pusher);
        }
        let labels: Vec<_> = series(&report, None).into_iter().map(|s| s.label).collect();
        assert_eq!(labels, ["wsgate (pusher)", "sockudo (pusher)"]);
        assert!(report.table().contains("== wsgate (pusher) ("));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["runs"][0]["protocol"], "pusher");
        report.runs[0].protocol = Some(crate::client::Protocol::Wsgate);
        assert_eq!(series(&report, None)[0].label, "wsgate");
    }

    #[test]
    fn reports_written_before_the_demanded_rate_existed_derive_it_from_the_fan_out() {
        let report = report(&whole(&[run("wsgate", &[step(50.0, 500, 10, None, 1.0)])]));
        // 10 messages accepted, 500 deliveries expected: 50 members per message.
        assert_eq!(
            series(&report, Some("old")).first().map(|s| s.points[0].0),
            Some(2_500.0)
        );
        assert_eq!(series(&report, Some("old"))[0].label, "wsgate (old)");
    }

    #[test]
    fn the_plot_names_every_series_and_both_bounds() {
        let report = report(&whole(&[
            run("wsgate", &[step(100.0, 1000, 10, Some(10_000.0), 2.0)]),
            run("nats", &[step(100.0, 1000, 10, Some(10_000.0), 3.0)]),
        ]));
        let svg = match svg("a ramp", &series(&report, None)) {
            Ok(svg) => svg,
            Err(error) => panic!("no plot: {error:#}"),
        };
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        for text in [
            "a ramp",
            "wsgate p99",
            "wsgate p50",
            "nats p99",
            "50 ms bound",
            "500 ms bound",
            "deliveries per second demanded",
        ] {
            assert!(svg.contains(text), "the plot lacks {text:?}");
        }
    }

    #[test]
    fn a_report_without_steps_is_refused_rather_than_drawn_empty() {
        let report = report(&whole(&[run("wsgate", &[])]));
        let refused = svg("idle", &series(&report, None));
        assert!(refused.is_err());
    }

    #[test]
    fn a_scale_out_is_drawn_as_one_line_per_node() {
        use crate::scale::{Figures, Sample};
        let scale = Figures {
            nodes: vec!["wsgate-1".into(), "wsgate-2".into()],
            added_at_seconds: 1.0,
            timeline: vec![
                Sample {
                    seconds: 0.5,
                    connections: vec![Some(400), None],
                },
                Sample {
                    seconds: 2.0,
                    connections: vec![Some(200), Some(200)],
                },
            ],
            ..Figures::default()
        };
        let svg = match timeline_svg("scale", &scale) {
            Ok(svg) => svg,
            Err(error) => panic!("no plot: {error:#}"),
        };
        for text in [
            "wsgate-1",
            "wsgate-2",
            "gateways added",
            "connections per node",
        ] {
            assert!(svg.contains(text), "the plot lacks {text:?}");
        }
        assert!(timeline_svg("empty", &Figures::default()).is_err());
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(1_234_567.0), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(0.0), "0");
    }
}

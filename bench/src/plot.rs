//! `docs/benchmarks.svg`: three horizontal bar charts, one above the other.
//!
//! 1. SayHello req/s of each hello-service row as a ratio to bare tonic (the line at 1.0),
//!    52 streams and 1 stream: the median of the rounds' ratios ([`crate::summary`]).
//! 2. Mesh throughput per scenario (calls/s; WatchOrders: events delivered/s).
//! 3. Mesh latency per scenario: p99, p90 and p50 drawn over one another.
//!
//! Horizontal bars, because the row names are long and read best beside their bar.

use std::path::Path;

use plotters::{coord::ranged1d::SegmentedCoord, prelude::*};

use crate::{
    BoxError,
    results::{SayHelloRow, ScenarioResult},
    summary::{self, SayHelloSummary},
};

const WIDTH: u32 = 1000;
const ROW_HEIGHT: u32 = 26;
/// Caption, axis labels and margins of one chart.
const CHART_CHROME: u32 = 110;
const NAME_WIDTH: u32 = 400;

const BLUE: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(255, 127, 14);
const LIGHT: RGBColor = RGBColor(198, 219, 239);
const MID: RGBColor = RGBColor(107, 174, 214);
const DARK: RGBColor = RGBColor(8, 81, 156);

/// One bar: the row it sits in (0 is the top row), its length, and its colour.
struct Bar {
    row: usize,
    value: f64,
    color: RGBColor,
}

/// One chart: a caption, the x axis, named rows, bars, a legend, and where a reference line
/// is drawn (the bare-tonic 1.0), if any.
struct BarChart {
    caption: String,
    x_description: String,
    rows: Vec<String>,
    bars: Vec<Bar>,
    legend: Vec<(&'static str, RGBColor)>,
    reference: Option<f64>,
    /// How the x axis's numbers are written.
    x_format: fn(&f64) -> String,
}

impl BarChart {
    fn height(&self) -> u32 {
        CHART_CHROME + ROW_HEIGHT * self.rows.len().max(1) as u32
    }
}

pub fn draw(path: &Path, sayhello: &[SayHelloRow], mesh: &[ScenarioResult]) -> Result<(), BoxError> {
    let charts: Vec<BarChart> = [
        sayhello_ratios(sayhello),
        mesh_throughput(mesh),
        mesh_latency(mesh),
    ]
    .into_iter()
    .flatten()
    .collect();
    let height = charts.iter().map(BarChart::height).sum();
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut rest = root.clone();
    for chart in &charts {
        let (area, below) = rest.split_vertically(chart.height());
        draw_chart(&area, chart)?;
        rest = below;
    }
    root.present()?;
    Ok(())
}

fn sayhello_ratios(rows: &[SayHelloRow]) -> Option<BarChart> {
    let others: Vec<SayHelloSummary> = summary::sayhello(rows)
        .into_iter()
        .filter(|server| !server.is_bare())
        .collect();
    let mut bars = Vec::new();
    for (i, server) in others.iter().enumerate() {
        bars.push(Bar {
            row: 2 * i,
            value: server.rps_52.ratio?.median,
            color: BLUE,
        });
        bars.push(Bar {
            row: 2 * i + 1,
            value: server.rps_1.ratio?.median,
            color: ORANGE,
        });
    }
    if bars.is_empty() {
        return None;
    }
    Some(BarChart {
        caption: "SayHello under h2load: req/s as a ratio to bare tonic (line: 1.0; median of rounds)".into(),
        x_description: "req/s ÷ bare tonic's req/s".into(),
        rows: others
            .iter()
            .flat_map(|server| {
                [
                    format!("{}, 52 streams", server.label),
                    format!("{}, 1 stream", server.label),
                ]
            })
            .collect(),
        bars,
        legend: vec![("52 streams (4 connections × 13)", BLUE), ("1 stream", ORANGE)],
        reference: Some(1.0),
        x_format: |x| format!("{x:.1}"),
    })
}

fn scenario_name(row: &ScenarioResult) -> String {
    format!("{} ({})", row.scenario, row.backend)
}

fn mesh_throughput(rows: &[ScenarioResult]) -> Option<BarChart> {
    if rows.is_empty() {
        return None;
    }
    Some(BarChart {
        caption: "Mesh scenarios: throughput".into(),
        x_description: "calls/s (WatchOrders: events delivered/s)".into(),
        rows: rows.iter().map(scenario_name).collect(),
        bars: rows
            .iter()
            .enumerate()
            .map(|(row, result)| Bar {
                row,
                value: result.rate,
                color: BLUE,
            })
            .collect(),
        legend: Vec::new(),
        reference: None,
        x_format: |x| format!("{x:.0}"),
    })
}

fn mesh_latency(rows: &[ScenarioResult]) -> Option<BarChart> {
    if rows.is_empty() {
        return None;
    }
    // Longest first, so that each shorter bar is drawn over the longer one.
    let mut bars = Vec::new();
    for (row, result) in rows.iter().enumerate() {
        bars.push(Bar {
            row,
            value: result.p99_ms,
            color: LIGHT,
        });
        bars.push(Bar {
            row,
            value: result.p90_ms,
            color: MID,
        });
        bars.push(Bar {
            row,
            value: result.p50_ms,
            color: DARK,
        });
    }
    Some(BarChart {
        caption: "Mesh scenarios: latency (WatchOrders: create to receipt)".into(),
        x_description: "milliseconds".into(),
        rows: rows.iter().map(scenario_name).collect(),
        bars,
        legend: vec![("p50", DARK), ("p90", MID), ("p99", LIGHT)],
        reference: None,
        x_format: |x| format!("{x:.0}"),
    })
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn draw_chart(area: &Area, chart: &BarChart) -> Result<(), BoxError> {
    let rows = chart.rows.len() as i32;
    let longest = chart
        .bars
        .iter()
        .map(|bar| bar.value)
        .chain(chart.reference)
        .fold(0.0, f64::max);
    // Room on the right for the legend, which sits in the lower right corner.
    let headroom = if chart.legend.is_empty() { 1.1 } else { 1.4 };
    let x_max = if longest > 0.0 { longest * headroom } else { 1.0 };
    let mut plot = ChartBuilder::on(area)
        .caption(&chart.caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(NAME_WIDTH)
        // Segments of 0..=rows - 1: one per row.
        .build_cartesian_2d(0.0..x_max, (0..rows - 1).into_segmented())?;
    // The y axis counts from the bottom; rows are listed from the top.
    let name_of = |value: &SegmentValue<i32>| match value {
        SegmentValue::CenterOf(i) => chart
            .rows
            .get((rows - 1 - i) as usize)
            .cloned()
            .unwrap_or_default(),
        _ => String::new(),
    };
    plot.configure_mesh()
        .disable_y_mesh()
        .y_labels(chart.rows.len())
        .y_label_formatter(&name_of)
        .x_label_formatter(&chart.x_format)
        .light_line_style(TRANSPARENT)
        .x_desc(&chart.x_description)
        .draw()?;
    let to_y = |row: usize| rows - 1 - row as i32;
    plot.draw_series(chart.bars.iter().map(|bar| {
        let y = to_y(bar.row);
        let mut rectangle = Rectangle::new(
            [
                (0.0, SegmentValue::Exact(y)),
                (bar.value, SegmentValue::Exact(y + 1)),
            ],
            bar.color.filled(),
        );
        rectangle.set_margin(4, 4, 0, 0);
        rectangle
    }))?;
    if let Some(x) = chart.reference {
        let line = [(x, SegmentValue::Exact(0)), (x, SegmentValue::Last)];
        plot.draw_series(std::iter::once(PathElement::new(line, BLACK.stroke_width(2))))?;
    }
    draw_legend(&mut plot, &chart.legend)?;
    Ok(())
}

type Plot<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<
        plotters::coord::types::RangedCoordf64,
        SegmentedCoord<plotters::coord::types::RangedCoordi32>,
    >,
>;

/// An empty series per legend entry, so that the legend names the colours.
fn draw_legend<'a, 'b: 'a>(
    plot: &mut Plot<'a, 'b>,
    legend: &[(&'static str, RGBColor)],
) -> Result<(), BoxError> {
    if legend.is_empty() {
        return Ok(());
    }
    for &(name, color) in legend {
        plot.draw_series(std::iter::empty::<Rectangle<(f64, SegmentValue<i32>)>>())?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
    }
    plot.configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

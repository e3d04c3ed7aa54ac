//! Line charts against epsilon (log axis), rendered by plotters' SVG backend
//! into a string that the report inlines.

use plotters::prelude::*;

use crate::{Error, Result};

/// One series of a chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// How it is drawn.
    pub kind: SeriesKind,
    /// Points in x order (for a band: its lower edge).
    pub points: Vec<(f64, f64)>,
    /// Index into the palette.
    pub color: usize,
}

/// How a series is drawn.
#[derive(Clone, Debug, PartialEq)]
pub enum SeriesKind {
    /// A solid line with a marker at each point.
    Line,
    /// A dashed line: a reference such as the non-private twin.
    Reference,
    /// A shaded band between `points` (lower) and these upper points.
    Band {
        /// The upper edge, at the same x as the lower edge.
        upper: Vec<(f64, f64)>,
    },
}

/// A chart of metrics against epsilon.
#[derive(Clone, Debug, PartialEq)]
pub struct LineChart {
    /// Caption.
    pub title: String,
    /// Label of the y axis.
    pub y_label: String,
    /// The series, drawn in order (bands first reads best).
    pub series: Vec<Series>,
}

/// Tableau 10: distinct, colour-blind-aware, prints well.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// A palette colour.
fn color(index: usize) -> RGBColor {
    PALETTE[index % PALETTE.len()]
}

fn plot_error<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> Error {
    Error::Plot(e.to_string())
}

/// Renders `chart` as an SVG document of `width` × `height` pixels, with
/// epsilon on a log axis.
///
/// # Errors
/// [`Error::Plot`] if the chart has no finite point or plotters fails.
pub fn render_svg(chart: &LineChart, width: u32, height: u32) -> Result<String> {
    let all = chart.series.iter().flat_map(|s| {
        let upper = match &s.kind {
            SeriesKind::Band { upper } => upper.as_slice(),
            _ => &[],
        };
        s.points.iter().chain(upper)
    });
    let (mut x_lo, mut x_hi, mut y_lo, mut y_hi) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in all.filter(|(x, y)| x.is_finite() && *x > 0.0 && y.is_finite()) {
        (x_lo, x_hi, y_lo, y_hi) = (x_lo.min(x), x_hi.max(x), y_lo.min(y), y_hi.max(y));
    }
    if !(x_lo.is_finite() && y_lo.is_finite()) {
        return Err(Error::Plot(format!("chart `{}` has no finite point to draw", chart.title)));
    }
    let pad = ((y_hi - y_lo) * 0.08).max(y_hi.abs().max(1e-3) * 0.02);
    let (y_lo, y_hi) = (y_lo - pad, y_hi + pad);
    let (x_lo, x_hi) = (x_lo / 1.25, x_hi * 1.25);

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let mut plot = ChartBuilder::on(&root)
            .caption(&chart.title, ("sans-serif", 17))
            .margin(14)
            .x_label_area_size(42)
            .y_label_area_size(64)
            .build_cartesian_2d((x_lo..x_hi).log_scale(), y_lo..y_hi)
            .map_err(plot_error)?;
        plot.configure_mesh()
            .x_desc("epsilon (log scale)")
            .y_desc(chart.y_label.as_str())
            .x_label_formatter(&|x| format!("{x}"))
            .y_label_formatter(&|y| format!("{y:.3}"))
            .light_line_style(TRANSPARENT)
            .bold_line_style(RGBColor(230, 230, 230))
            .draw()
            .map_err(plot_error)?;
        for s in &chart.series {
            let c = color(s.color);
            match &s.kind {
                SeriesKind::Band { upper } => {
                    let outline: Vec<(f64, f64)> =
                        s.points.iter().copied().chain(upper.iter().rev().copied()).collect();
                    plot.draw_series(std::iter::once(Polygon::new(outline, c.mix(0.18))))
                        .map_err(plot_error)?
                        .label(s.label.as_str())
                        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 18, y + 5)], c.mix(0.18).filled()));
                }
                SeriesKind::Line => {
                    plot.draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))
                        .map_err(plot_error)?
                        .label(s.label.as_str())
                        .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(2)));
                    plot.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, c.filled()))).map_err(plot_error)?;
                }
                SeriesKind::Reference => {
                    plot.draw_series(DashedLineSeries::new(s.points.iter().copied(), 6, 4, c.stroke_width(2)))
                        .map_err(plot_error)?
                        .label(s.label.as_str())
                        .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(2)));
                }
            }
        }
        plot.configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(plot_error)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart() -> LineChart {
        LineChart {
            title: "NDCG@10 against epsilon".into(),
            y_label: "NDCG@10".into(),
            series: vec![
                Series {
                    label: "spread over seeds".into(),
                    kind: SeriesKind::Band { upper: vec![(1.0, 0.2), (4.0, 0.3)] },
                    points: vec![(1.0, 0.1), (4.0, 0.25)],
                    color: 0,
                },
                Series {
                    label: "DP mean".into(),
                    kind: SeriesKind::Line,
                    points: vec![(1.0, 0.15), (4.0, 0.27)],
                    color: 0,
                },
                Series {
                    label: "non-private twin".into(),
                    kind: SeriesKind::Reference,
                    points: vec![(1.0, 0.31), (4.0, 0.31)],
                    color: 3,
                },
            ],
        }
    }

    #[test]
    fn a_chart_renders_to_svg_with_every_series_in_the_legend() {
        let svg = render_svg(&chart(), 640, 360).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        for label in ["spread over seeds", "DP mean", "non-private twin", "NDCG@10 against epsilon"] {
            assert_eq!(
                svg.matches(&format!(">{label}<")).count() + svg.matches(&format!(">\n{label}\n<")).count(),
                1,
                "{label}"
            );
        }
        assert!(svg.contains("<polygon"), "the band is drawn");
    }

    #[test]
    fn a_chart_without_finite_points_is_an_error_not_a_panic() {
        let mut c = chart();
        for s in &mut c.series {
            s.points = vec![(f64::NAN, 1.0)];
            s.kind = SeriesKind::Line;
        }
        assert!(matches!(render_svg(&c, 640, 360), Err(Error::Plot(_))));
    }
}

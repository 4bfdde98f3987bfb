//! Charts drawn by plotters as SVG, for [`crate::Layout::chart`]: bars for one value per
//! category (revenue per day, top products), lines for several series over the same
//! categories (FDS decisions per day). Labels are set in the document's font, so Korean
//! product names and titles render.

use plotters::prelude::*;

use crate::{DocumentError, DocumentFont};

/// The drawing size in SVG pixels; [`crate::Layout::chart`] scales it to the page.
pub const WIDTH: u32 = 720;
pub const HEIGHT: u32 = 300;

const PALETTE: [RGBColor; 4] = [
    RGBColor(52, 101, 164),
    RGBColor(78, 154, 6),
    RGBColor(245, 121, 0),
    RGBColor(204, 0, 0),
];

/// One value per category.
#[derive(Debug, Clone, Default)]
pub struct BarChart {
    pub title: String,
    pub labels: Vec<String>,
    pub values: Vec<f64>,
}

impl BarChart {
    pub fn svg(&self, font: &DocumentFont) -> Result<String, DocumentError> {
        font.register_with_plotters()?;
        let max = self.values.iter().copied().fold(0.0_f64, f64::max);
        let (count, offset) = slots(self.labels.len());
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
            root.fill(&WHITE).map_err(chart_error)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(&self.title, ("sans-serif", 18))
                .margin(8)
                .x_label_area_size(34)
                .y_label_area_size(78)
                .build_cartesian_2d(categories(count), 0.0..headroom(max))
                .map_err(chart_error)?;
            let labels = &self.labels;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(count.min(16))
                .x_label_formatter(&|x| segment_label(labels, x, offset))
                .y_label_formatter(&|v| thousands(*v))
                .label_style(("sans-serif", 12))
                .draw()
                .map_err(chart_error)?;
            chart
                .draw_series(
                    Histogram::vertical(&chart)
                        .style(PALETTE[0].filled())
                        .margin(bar_margin(count))
                        .data(
                            self.values
                                .iter()
                                .enumerate()
                                .map(|(i, v)| (i + offset, *v)),
                        ),
                )
                .map_err(chart_error)?;
            root.present().map_err(chart_error)?;
        }
        Ok(svg)
    }
}

/// Several series over the same categories, with a legend.
#[derive(Debug, Clone, Default)]
pub struct LineChart {
    pub title: String,
    pub labels: Vec<String>,
    pub series: Vec<(String, Vec<f64>)>,
}

impl LineChart {
    pub fn svg(&self, font: &DocumentFont) -> Result<String, DocumentError> {
        font.register_with_plotters()?;
        let max = self
            .series
            .iter()
            .flat_map(|(_, values)| values.iter().copied())
            .fold(0.0_f64, f64::max);
        let (count, offset) = slots(self.labels.len());
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
            root.fill(&WHITE).map_err(chart_error)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(&self.title, ("sans-serif", 18))
                .margin(8)
                .x_label_area_size(34)
                .y_label_area_size(60)
                .build_cartesian_2d(categories(count), 0.0..headroom(max))
                .map_err(chart_error)?;
            let labels = &self.labels;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(count.min(16))
                .x_label_formatter(&|x| segment_label(labels, x, offset))
                .y_label_formatter(&|v| thousands(*v))
                // Small counts get one label per whole number, not repeated rounded ones.
                .y_labels(integer_ticks(max))
                .label_style(("sans-serif", 12))
                .draw()
                .map_err(chart_error)?;
            for (index, (name, values)) in self.series.iter().enumerate() {
                let color = PALETTE[index % PALETTE.len()];
                chart
                    .draw_series(LineSeries::new(
                        values
                            .iter()
                            .enumerate()
                            .map(|(i, v)| (SegmentValue::CenterOf(i + offset), *v)),
                        color.stroke_width(2),
                    ))
                    .map_err(chart_error)?
                    .label(name)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                    });
            }
            // A marker on every point: a series of one day is a dot, not nothing.
            for (index, (_, values)) in self.series.iter().enumerate() {
                let color = PALETTE[index % PALETTE.len()];
                chart
                    .draw_series(values.iter().enumerate().map(|(i, v)| {
                        Circle::new((SegmentValue::CenterOf(i + offset), *v), 3, color.filled())
                    }))
                    .map_err(chart_error)?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK.mix(0.3))
                .label_font(("sans-serif", 12))
                .position(SeriesLabelPosition::UpperLeft)
                .draw()
                .map_err(chart_error)?;
            root.present().map_err(chart_error)?;
        }
        Ok(svg)
    }
}

/// The space left and right of a bar, in SVG pixels: bars at most `MAX_BAR` wide, so one or two
/// categories do not fill the chart with a slab.
fn bar_margin(count: usize) -> u32 {
    const PLOT_WIDTH: usize = WIDTH as usize - 94;
    const MAX_BAR: usize = 90;
    let segment = PLOT_WIDTH / count.max(1);
    u32::try_from(segment.saturating_sub(MAX_BAR) / 2)
        .unwrap_or(0)
        .max(6)
}

/// One segment per category. plotters' integer ranges include their end, so `0..count` would
/// add an empty slot after the last bar.
fn categories(
    count: usize,
) -> plotters::coord::ranged1d::SegmentedCoord<plotters::coord::types::RangedCoordusize> {
    (0..count.saturating_sub(1)).into_segmented()
}

fn chart_error<E: std::fmt::Display>(e: E) -> DocumentError {
    DocumentError::Chart(e.to_string())
}

/// The top of the value axis: a tenth above the largest value, 1 when all are 0.
fn headroom(max: f64) -> f64 {
    if max > 0.0 { max * 1.1 } else { 1.0 }
}

/// How many value labels: one per whole number up to 10, else plotters' default.
fn integer_ticks(max: f64) -> usize {
    if max < 10.0 {
        // max is in 0..10 here: the cast cannot overflow.
        (max.ceil() as usize + 1).max(2)
    } else {
        10
    }
}

/// How many slots the axis has and where the first category sits: one category alone is put in
/// the middle of three slots (plotters cannot map a range of one value), others fill the axis.
fn slots(categories: usize) -> (usize, usize) {
    if categories <= 1 {
        (3, 1)
    } else {
        (categories, 0)
    }
}

fn segment_label(labels: &[String], x: &SegmentValue<usize>, offset: usize) -> String {
    match x {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => i
            .checked_sub(offset)
            .and_then(|i| labels.get(i))
            .cloned()
            .unwrap_or_default(),
        SegmentValue::Last => String::new(),
    }
}

/// `1234567.0` → `1,234,567` (axis labels are whole amounts or counts).
pub fn thousands(value: f64) -> String {
    let rounded = value.round();
    let negative = rounded < 0.0;
    let digits = format!("{:.0}", rounded.abs());
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if negative { format!("-{out}") } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bars' horizontal centers, from the SVG (the bars are the rectangles in the first
    /// palette color).
    fn bar_centers(svg: &str) -> Vec<f64> {
        let attr = |tag: &str, name: &str| -> f64 {
            let start = tag.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
            tag[start..].split('"').next().unwrap().parse().unwrap()
        };
        svg.split("<rect")
            .filter(|tag| tag.contains("fill=\"#3465A4\""))
            .map(|tag| attr(tag, "x") + attr(tag, "width") / 2.0)
            .collect()
    }

    #[test]
    fn one_category_is_a_bar_in_the_middle_and_several_fill_the_axis() {
        let font = crate::FontSettings::default().load().unwrap();
        let one = BarChart {
            title: "t".to_owned(),
            labels: vec!["12-06".to_owned()],
            values: vec![90_000.0],
        };
        let svg = one.svg(&font).unwrap();
        let centers = bar_centers(&svg);
        assert_eq!(centers.len(), 1, "{centers:?}");
        let middle = f64::from(WIDTH) / 2.0;
        assert!(
            (centers[0] - middle).abs() < f64::from(WIDTH) / 8.0,
            "{centers:?}"
        );
        // Its label stands under it.
        let label = svg
            .split("<text")
            .find(|tag| tag.contains("12-06"))
            .unwrap();
        let x: f64 = label
            .split("x=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (x - centers[0]).abs() < 10.0,
            "label at {x}, bar at {centers:?}"
        );

        let three = BarChart {
            title: "t".to_owned(),
            labels: vec!["a".to_owned(), "b".to_owned(), "c".to_owned()],
            values: vec![1.0, 2.0, 3.0],
        };
        let mut centers = bar_centers(&three.svg(&font).unwrap());
        centers.sort_by(f64::total_cmp);
        assert_eq!(centers.len(), 3, "{centers:?}");
        // Evenly spaced, the last in the right third (no empty slot after it).
        assert!(centers[2] > f64::from(WIDTH) * 2.0 / 3.0, "{centers:?}");
        let gaps = (centers[1] - centers[0], centers[2] - centers[1]);
        assert!((gaps.0 - gaps.1).abs() < 2.0, "{centers:?}");
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(-45000.0), "-45,000");
    }
}

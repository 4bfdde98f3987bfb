//! [`Layout`]: a page flow on A4 portrait (headings, paragraphs, label/value lines, tables with
//! a header that repeats on each page, charts), kept as a list of items per page and written
//! as PDF by krilla in [`Layout::finish`], which also numbers the pages.
//!
//! Text is set in one [`DocumentFont`]; krilla embeds the glyphs used (a subset, so a
//! 4.7 MB font gives PDFs of tens of kilobytes) with a `ToUnicode` map, so the text extracts.

use krilla::Document;
use krilla::color::rgb;
use krilla::geom::{PathBuilder, Point, Rect, Size, Transform};
use krilla::metadata::Metadata;
use krilla::num::NormalizedF32;
use krilla::page::PageSettings;
use krilla::paint::{Fill, Stroke};
use krilla::surface::Surface;
use krilla::text::TextDirection;
use krilla_svg::{SurfaceExt, SvgSettings};

use crate::{DocumentError, DocumentFont};

/// A4 portrait, in points.
pub const PAGE_WIDTH: f32 = 595.28;
pub const PAGE_HEIGHT: f32 = 841.89;
/// Left, right and top margin; the bottom margin leaves room for the page number.
pub const MARGIN: f32 = 50.0;
const BOTTOM: f32 = PAGE_HEIGHT - 60.0;
const CONTENT_WIDTH: f32 = PAGE_WIDTH - 2.0 * MARGIN;

const BODY: f32 = 10.0;
const LINE: f32 = 15.0;
const GRAY: (u8, u8, u8) = (96, 96, 96);
const BLACK: (u8, u8, u8) = (0, 0, 0);
const HEADER_FILL: (u8, u8, u8) = (232, 236, 242);

/// Where a table cell's text sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table column: its title, its share of the content width (shares are scaled to fill it),
/// and the alignment of its cells (money right).
#[derive(Debug, Clone)]
pub struct Column {
    pub title: String,
    pub share: f32,
    pub align: Align,
}

impl Column {
    pub fn left(title: impl Into<String>, share: f32) -> Column {
        Column {
            title: title.into(),
            share,
            align: Align::Left,
        }
    }

    pub fn right(title: impl Into<String>, share: f32) -> Column {
        Column {
            title: title.into(),
            share,
            align: Align::Right,
        }
    }
}

enum Item {
    Text {
        x: f32,
        y: f32,
        size: f32,
        text: String,
        color: (u8, u8, u8),
    },
    Rule {
        y: f32,
        width: f32,
    },
    Band {
        y: f32,
        height: f32,
        color: (u8, u8, u8),
    },
    Chart {
        y: f32,
        width: f32,
        height: f32,
        tree: Box<usvg::Tree>,
    },
}

/// A document being laid out. Each call places its content below the last one and starts a new
/// page when it would not fit.
pub struct Layout {
    font: DocumentFont,
    title: String,
    pages: Vec<Vec<Item>>,
    y: f32,
}

impl Layout {
    /// An empty document; `title` goes into the PDF's metadata (and is not printed: call
    /// [`Layout::title`] for that).
    pub fn new(font: &DocumentFont, title: impl Into<String>) -> Layout {
        Layout {
            font: font.clone(),
            title: title.into(),
            pages: vec![Vec::new()],
            y: MARGIN,
        }
    }

    pub fn font(&self) -> &DocumentFont {
        &self.font
    }

    /// The large line at the top of a document.
    pub fn title(&mut self, text: &str) {
        self.need(34.0);
        self.y += 22.0;
        self.text(MARGIN, 20.0, text, BLACK);
        self.y += 14.0;
    }

    /// A section heading with a rule under it.
    pub fn heading(&mut self, text: &str) {
        self.need(28.0 + LINE);
        self.y += 18.0;
        self.text(MARGIN, 13.0, text, BLACK);
        self.y += 5.0;
        self.push(Item::Rule {
            y: self.y,
            width: 0.6,
        });
        self.y += 8.0;
    }

    /// Body text, wrapped to the content width (at spaces, or anywhere in a word longer than a
    /// line, as Korean is wrapped).
    pub fn paragraph(&mut self, text: &str) {
        for line in self.wrap(text, BODY, CONTENT_WIDTH) {
            self.need(LINE);
            self.y += LINE;
            self.text(MARGIN, BODY, &line, BLACK);
        }
        self.y += 4.0;
    }

    /// Small gray text (notes, the time a document was made).
    pub fn note(&mut self, text: &str) {
        for line in self.wrap(text, 8.0, CONTENT_WIDTH) {
            self.need(12.0);
            self.y += 12.0;
            self.text(MARGIN, 8.0, &line, GRAY);
        }
        self.y += 4.0;
    }

    /// Lines of `label  value`, labels gray in a column of their own.
    pub fn key_values(&mut self, rows: &[(&str, String)]) {
        let label_width = rows
            .iter()
            .map(|(label, _)| self.font.width(label, BODY))
            .fold(0.0_f32, f32::max)
            + 16.0;
        for (label, value) in rows {
            let lines = self.wrap(value, BODY, CONTENT_WIDTH - label_width);
            self.need(LINE * lines.len().max(1) as f32);
            self.y += LINE;
            self.text(MARGIN, BODY, label, GRAY);
            for (i, line) in lines.iter().enumerate() {
                if i > 0 {
                    self.y += LINE;
                }
                self.text(MARGIN + label_width, BODY, line, BLACK);
            }
        }
        self.y += 6.0;
    }

    /// A table: a shaded header row (repeated at the top of each page the table runs onto),
    /// then one line per row; cells longer than their column are cut with `…`.
    pub fn table(&mut self, columns: &[Column], rows: &[Vec<String>]) {
        let total: f32 = columns.iter().map(|c| c.share.max(0.0)).sum();
        let scale = if total > 0.0 {
            CONTENT_WIDTH / total
        } else {
            0.0
        };
        let widths: Vec<f32> = columns.iter().map(|c| c.share.max(0.0) * scale).collect();
        let titles: Vec<String> = columns.iter().map(|c| c.title.clone()).collect();
        self.need(2.0 * (LINE + 4.0));
        self.table_header(columns, &widths, &titles);
        for row in rows {
            if self.y + LINE + 4.0 > BOTTOM {
                self.new_page();
                self.table_header(columns, &widths, &titles);
            }
            self.y += LINE + 2.0;
            self.cells(columns, &widths, row, BLACK);
            self.y += 2.0;
        }
        self.push(Item::Rule {
            y: self.y + 2.0,
            width: 0.4,
        });
        self.y += 8.0;
    }

    /// Right-aligned `label  value` lines under a table (subtotal, tax, total).
    pub fn totals(&mut self, rows: &[(&str, String)]) {
        let value_right = PAGE_WIDTH - MARGIN;
        let label_right = value_right - 110.0;
        for (label, value) in rows {
            self.need(LINE + 2.0);
            self.y += LINE + 2.0;
            let lw = self.font.width(label, BODY);
            self.text(label_right - lw, BODY, label, GRAY);
            let vw = self.font.width(value, BODY + 1.0);
            self.text(value_right - vw, BODY + 1.0, value, BLACK);
        }
        self.y += 6.0;
    }

    /// A chart (an SVG, as [`crate::chart`] draws them) at the content width, `height` points
    /// high, its text set in the document's font.
    pub fn chart(&mut self, svg: &str, height: f32) -> Result<(), DocumentError> {
        let mut options = usvg::Options::default();
        let db = options.fontdb_mut();
        db.load_font_data(self.font.bytes().to_vec());
        db.set_sans_serif_family(self.font.family());
        options.font_family = self.font.family().to_owned();
        let tree = usvg::Tree::from_str(svg, &options)
            .map_err(|e| DocumentError::Chart(format!("the chart's SVG: {e}")))?;
        self.need(height + 10.0);
        self.y += 6.0;
        self.push(Item::Chart {
            y: self.y,
            width: CONTENT_WIDTH,
            height,
            tree: Box::new(tree),
        });
        self.y += height + 4.0;
        Ok(())
    }

    /// Vertical space.
    pub fn space(&mut self, points: f32) {
        self.y += points.max(0.0);
    }

    /// Starts a new page.
    pub fn new_page(&mut self) {
        self.pages.push(Vec::new());
        self.y = MARGIN;
    }

    pub fn page_count(&self) -> usize {
        self.pages.len()
    }

    /// The PDF: every page drawn, numbered `n / N` at the bottom, the title in the metadata.
    pub fn finish(self) -> Result<Vec<u8>, DocumentError> {
        let mut document = Document::new();
        document.set_metadata(
            Metadata::new()
                .title(self.title.clone())
                .language("ko".to_owned())
                .creator("ShopFDS".to_owned()),
        );
        let count = self.pages.len();
        let settings = PageSettings::from_wh(PAGE_WIDTH, PAGE_HEIGHT)
            .ok_or_else(|| DocumentError::Pdf("A4 is not a valid page size".to_owned()))?;
        for (index, items) in self.pages.iter().enumerate() {
            let mut page = document.start_page_with(settings.clone());
            let mut surface = page.surface();
            for item in items {
                draw(&mut surface, &self.font, item);
            }
            let number = format!("{} / {count}", index + 1);
            let width = self.font.width(&number, 8.0);
            draw(
                &mut surface,
                &self.font,
                &Item::Text {
                    x: (PAGE_WIDTH - width) / 2.0,
                    y: PAGE_HEIGHT - 30.0,
                    size: 8.0,
                    text: number,
                    color: GRAY,
                },
            );
            surface.finish();
            page.finish();
        }
        document
            .finish()
            .map_err(|e| DocumentError::Pdf(format!("{e:?}")))
    }

    fn table_header(&mut self, columns: &[Column], widths: &[f32], titles: &[String]) {
        self.y += 4.0;
        self.push(Item::Band {
            y: self.y,
            height: LINE + 2.0,
            color: HEADER_FILL,
        });
        self.y += LINE - 2.0;
        self.cells(columns, widths, titles, BLACK);
        self.y += 4.0;
    }

    fn cells(&mut self, columns: &[Column], widths: &[f32], row: &[String], color: (u8, u8, u8)) {
        let mut x = MARGIN;
        for ((column, width), cell) in columns.iter().zip(widths).zip(row) {
            let inner = (width - 8.0).max(0.0);
            let text = self.fit(cell, BODY, inner);
            let at = match column.align {
                Align::Left => x + 4.0,
                Align::Right => x + 4.0 + inner - self.font.width(&text, BODY),
            };
            self.text(at, BODY, &text, color);
            x += width;
        }
    }

    /// `text` cut to `width` with `…` when it is wider.
    fn fit(&self, text: &str, size: f32, width: f32) -> String {
        if self.font.width(text, size) <= width {
            return text.to_owned();
        }
        let mut out = String::new();
        for c in text.chars() {
            out.push(c);
            if self.font.width(&out, size) + self.font.width("…", size) > width {
                out.pop();
                break;
            }
        }
        out.push('…');
        out
    }

    fn wrap(&self, text: &str, size: f32, width: f32) -> Vec<String> {
        let mut lines = Vec::new();
        for paragraph in text.split('\n') {
            let mut line = String::new();
            for word in paragraph.split(' ') {
                let candidate = if line.is_empty() {
                    word.to_owned()
                } else {
                    format!("{line} {word}")
                };
                if self.font.width(&candidate, size) <= width {
                    line = candidate;
                    continue;
                }
                if !line.is_empty() {
                    lines.push(std::mem::take(&mut line));
                }
                for c in word.chars() {
                    line.push(c);
                    if self.font.width(&line, size) > width && line.chars().count() > 1 {
                        line.pop();
                        lines.push(std::mem::take(&mut line));
                        line.push(c);
                    }
                }
            }
            lines.push(line);
        }
        lines
    }

    fn need(&mut self, height: f32) {
        if self.y + height > BOTTOM && self.y > MARGIN {
            self.new_page();
        }
    }

    fn text(&mut self, x: f32, size: f32, text: &str, color: (u8, u8, u8)) {
        let y = self.y;
        self.push(Item::Text {
            x,
            y,
            size,
            text: text.to_owned(),
            color,
        });
    }

    fn push(&mut self, item: Item) {
        if let Some(page) = self.pages.last_mut() {
            page.push(item);
        }
    }
}

fn fill(color: (u8, u8, u8)) -> Fill {
    Fill {
        paint: rgb::Color::new(color.0, color.1, color.2).into(),
        opacity: NormalizedF32::ONE,
        rule: Default::default(),
    }
}

fn draw(surface: &mut Surface<'_>, font: &DocumentFont, item: &Item) {
    match item {
        Item::Text {
            x,
            y,
            size,
            text,
            color,
        } => {
            surface.set_fill(Some(fill(*color)));
            surface.draw_text(
                Point::from_xy(*x, *y),
                font.pdf(),
                *size,
                text,
                false,
                TextDirection::Auto,
            );
        }
        Item::Rule { y, width } => {
            let mut path = PathBuilder::new();
            path.move_to(MARGIN, *y);
            path.line_to(PAGE_WIDTH - MARGIN, *y);
            if let Some(path) = path.finish() {
                surface.set_fill(None);
                surface.set_stroke(Some(Stroke {
                    width: *width,
                    ..Stroke::default()
                }));
                surface.draw_path(&path);
                surface.set_stroke(None);
            }
        }
        Item::Band { y, height, color } => {
            let mut path = PathBuilder::new();
            if let Some(rect) = Rect::from_xywh(MARGIN, *y, CONTENT_WIDTH, *height) {
                path.push_rect(rect);
            }
            if let Some(path) = path.finish() {
                surface.set_stroke(None);
                surface.set_fill(Some(fill(*color)));
                surface.draw_path(&path);
            }
        }
        Item::Chart {
            y,
            width,
            height,
            tree,
        } => {
            if let Some(size) = Size::from_wh(*width, *height) {
                surface.push_transform(&Transform::from_translate(MARGIN, *y));
                surface.draw_svg(tree, size, SvgSettings::default());
                surface.pop();
            }
        }
    }
}

//! Line charts as PNG images, drawn by hand: a canvas of RGB pixels, lines, axes with
//! ticks, and labels in a 5×7 bitmap font, encoded as PNG by hand (the compression is
//! flate2's).

use flate2::Compression;
use flate2::Crc;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use std::io::{Read, Write};
use std::path::Path;

type Rgb = [u8; 3];

pub const BLUE: Rgb = [31, 119, 180];
pub const ORANGE: Rgb = [255, 127, 14];
pub const GREEN: Rgb = [44, 160, 44];
const WHITE: Rgb = [255, 255, 255];
const BLACK: Rgb = [30, 30, 30];
const GRID: Rgb = [225, 225, 225];

/// Pixels of text: each glyph is 5 columns × 7 rows, scaled by `SCALE`.
const SCALE: usize = 2;
const GLYPH_W: usize = 6 * SCALE;

/// One curve: a value per epoch (epoch 1 first).
pub struct Series<'a> {
    pub name: &'a str,
    pub color: Rgb,
    pub values: &'a [f64],
}

/// One chart: a title and its curves; `percent` labels the y axis in %.
pub struct Panel<'a> {
    pub title: &'a str,
    pub series: Vec<Series<'a>>,
    pub percent: bool,
}

struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl Canvas {
    fn new(width: usize, height: usize) -> Canvas {
        Canvas {
            width,
            height,
            pixels: WHITE.repeat(width * height),
        }
    }

    fn set(&mut self, x: i64, y: i64, color: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let i = 3 * (y as usize * self.width + x as usize);
            self.pixels[i..i + 3].copy_from_slice(&color);
        }
    }

    fn fill(&mut self, x: i64, y: i64, w: i64, h: i64, color: Rgb) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.set(xx, yy, color);
            }
        }
    }

    /// A line `width` pixels thick (Bresenham, with a square brush).
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), width: i64, color: Rgb) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = ((x1 - x0).signum(), (y1 - y0).signum());
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.fill(x - width / 2, y - width / 2, width, width, color);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Text with its top-left corner at `(x, y)`.
    fn text(&mut self, x: i64, y: i64, text: &str, color: Rgb) {
        for (i, c) in text.chars().enumerate() {
            let rows = glyph(c);
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        let px = x + (i * GLYPH_W + col * SCALE) as i64;
                        let py = y + (r * SCALE) as i64;
                        self.fill(px, py, SCALE as i64, SCALE as i64, color);
                    }
                }
            }
        }
    }

    fn save_png(&self, path: &Path) -> Result<(), String> {
        let fail = |e: std::io::Error| format!("{}: cannot write the PNG: {e}", path.display());
        let png = encode_png(self.width, self.height, &self.pixels).map_err(fail)?;
        check_png(&png, self.width, self.height, &self.pixels)
            .map_err(|e| format!("{}: the PNG encoder is wrong: {e}", path.display()))?;
        std::fs::write(path, png).map_err(fail)
    }
}

const PNG_SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// The PNG file of a `width` × `height` image of 8-bit RGB pixels, row by row: the
/// signature, the header (IHDR), one IDAT chunk holding the zlib stream of the rows, each
/// after its filter byte 0 (none), and the end (IEND).
fn encode_png(width: usize, height: usize, rgb: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = PNG_SIGNATURE.to_vec();
    let mut header = Vec::with_capacity(13);
    header.extend((width as u32).to_be_bytes());
    header.extend((height as u32).to_be_bytes());
    // Bit depth 8, colour type 2 (RGB), compression 0 (deflate), filter method 0,
    // no interlace.
    header.extend([8, 2, 0, 0, 0]);
    write_chunk(&mut out, b"IHDR", &header);
    let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
    for row in rgb.chunks_exact(3 * width) {
        z.write_all(&[0])?;
        z.write_all(row)?;
    }
    write_chunk(&mut out, b"IDAT", &z.finish()?);
    write_chunk(&mut out, b"IEND", &[]);
    Ok(out)
}

/// A chunk: the length of `data` (big-endian), the type, the data, and the CRC-32 of type
/// and data.
fn write_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    out.extend(kind);
    out.extend(data);
    let mut crc = Crc::new();
    crc.update(kind);
    crc.update(data);
    out.extend(crc.sum().to_be_bytes());
}

/// Reads `png` back as a decoder would, a check of `encode_png` at the cost of a
/// millisecond: the signature, each chunk's CRC, the header, and the decompressed rows
/// against `rgb`.
fn check_png(png: &[u8], width: usize, height: usize, rgb: &[u8]) -> Result<(), String> {
    let mut rest = png.strip_prefix(PNG_SIGNATURE).ok_or("no PNG signature")?;
    let (mut kinds, mut header, mut idat) = (Vec::new(), Vec::new(), Vec::new());
    while !rest.is_empty() {
        let len = rest
            .first_chunk::<4>()
            .map(|b| u32::from_be_bytes(*b) as usize)
            .filter(|len| rest.len() >= len + 12)
            .ok_or("a truncated chunk")?;
        let (kind, data) = (&rest[4..8], &rest[8..8 + len]);
        let mut crc = Crc::new();
        crc.update(&rest[4..8 + len]);
        if crc.sum().to_be_bytes() != rest[8 + len..12 + len] {
            return Err(format!(
                "the CRC of {} is wrong",
                String::from_utf8_lossy(kind)
            ));
        }
        match kind {
            b"IHDR" => header = data.to_vec(),
            b"IDAT" => idat.extend(data),
            _ => {}
        }
        kinds.push(kind.to_vec());
        rest = &rest[12 + len..];
    }
    if kinds != [&b"IHDR"[..], b"IDAT", b"IEND"] {
        return Err("the chunks are not IHDR, IDAT, IEND".into());
    }
    let mut expected = (width as u32).to_be_bytes().to_vec();
    expected.extend((height as u32).to_be_bytes());
    expected.extend([8, 2, 0, 0, 0]);
    if header != expected {
        return Err(format!("the header is {header:?}, not {expected:?}"));
    }
    let mut rows = Vec::new();
    ZlibDecoder::new(&idat[..])
        .read_to_end(&mut rows)
        .map_err(|e| format!("the image data does not decompress: {e}"))?;
    let row = 1 + 3 * width;
    let same = rows.len() == height * row
        && rows
            .chunks_exact(row)
            .zip(rgb.chunks_exact(3 * width))
            .all(|(r, pixels)| r[0] == 0 && r[1..] == *pixels);
    if !same {
        return Err("the decompressed rows are not the image".into());
    }
    Ok(())
}

fn text_width(text: &str) -> i64 {
    (text.chars().count() * GLYPH_W) as i64
}

/// Round tick positions covering `[lo, hi]`: a step of 1, 2 or 5 × 10^k giving about five
/// ticks, and the decimals that step needs.
fn ticks(lo: f64, hi: f64) -> (Vec<f64>, usize) {
    let raw = (hi - lo).max(1e-12) / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    ((first..=last).map(|k| k as f64 * step).collect(), decimals)
}

/// Draws `panel` into the rectangle `(x, y, w, h)` of the canvas.
fn draw_panel(c: &mut Canvas, (x, y, w, h): (i64, i64, i64, i64), panel: &Panel) {
    let (left, right, top, bottom) = (x + 80, x + w - 20, y + 50, y + h - 50);
    let scale = if panel.percent { 100.0 } else { 1.0 };
    let values = || {
        panel
            .series
            .iter()
            .flat_map(|s| s.values.iter().map(|v| v * scale))
    };
    let (mut lo, mut hi) = values().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-3);
    (lo, hi) = (lo - pad, hi + pad);
    let epochs = panel
        .series
        .iter()
        .map(|s| s.values.len())
        .max()
        .unwrap_or(0);
    let x_max = epochs.max(2) as f64;
    let px = |epoch: f64| left + ((epoch - 1.0) / (x_max - 1.0) * (right - left) as f64) as i64;
    let py = |v: f64| bottom - ((v - lo) / (hi - lo) * (bottom - top) as f64) as i64;

    let (y_ticks, decimals) = ticks(lo, hi);
    for v in y_ticks {
        let label = format!("{v:.decimals$}{}", if panel.percent { "%" } else { "" });
        c.line((left, py(v)), (right, py(v)), 1, GRID);
        c.line((left - 5, py(v)), (left, py(v)), 1, BLACK);
        c.text(left - 10 - text_width(&label), py(v) - 7, &label, BLACK);
    }
    let (x_ticks, _) = ticks(1.0, x_max);
    for e in x_ticks.into_iter().filter(|e| e.fract() == 0.0) {
        let label = format!("{e}");
        c.line((px(e), bottom), (px(e), bottom + 5), 1, BLACK);
        c.text(px(e) - text_width(&label) / 2, bottom + 10, &label, BLACK);
    }
    c.line((left, top), (left, bottom), 1, BLACK);
    c.line((left, bottom), (right, bottom), 1, BLACK);
    c.text(
        left + (right - left - text_width("epoch")) / 2,
        bottom + 30,
        "epoch",
        BLACK,
    );
    c.text(
        x + (w - text_width(panel.title)) / 2,
        y + 15,
        panel.title,
        BLACK,
    );

    for (i, s) in panel.series.iter().enumerate() {
        let points: Vec<(i64, i64)> = s
            .values
            .iter()
            .enumerate()
            .map(|(e, v)| (px(e as f64 + 1.0), py(v * scale)))
            .collect();
        for pair in points.windows(2) {
            c.line(pair[0], pair[1], 3, s.color);
        }
        for &(qx, qy) in &points {
            c.fill(qx - 3, qy - 3, 7, 7, s.color);
        }
        let ly = top + 10 + 22 * i as i64;
        c.fill(right - 150, ly + 5, 24, 4, s.color);
        c.text(right - 118, ly, s.name, BLACK);
    }
}

/// Writes the panels side by side as a PNG at `path`.
///
/// # Errors
/// A message naming the file when it cannot be written.
pub fn write_png(path: &Path, panels: &[Panel]) -> Result<(), String> {
    let (pw, ph) = (520, 420);
    let mut canvas = Canvas::new(pw * panels.len().max(1), ph);
    for (i, panel) in panels.iter().enumerate() {
        let rect = ((i * pw) as i64, 0, pw as i64, ph as i64);
        draw_panel(&mut canvas, rect, panel);
    }
    canvas.save_png(path)
}

/// The 5×7 bitmap of `c`, one byte per row, bit 4 leftmost; an outlined box for characters
/// the font lacks.
fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        ',' => [0, 0, 0, 0, 0x0C, 0x04, 0x08],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        ' ' => [0; 7],
        'a' => [0, 0, 0x0E, 0x01, 0x0F, 0x11, 0x0F],
        'b' => [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1E],
        'c' => [0, 0, 0x0E, 0x10, 0x10, 0x11, 0x0E],
        'd' => [0x01, 0x01, 0x0D, 0x13, 0x11, 0x11, 0x0F],
        'e' => [0, 0, 0x0E, 0x11, 0x1F, 0x10, 0x0E],
        'f' => [0x06, 0x09, 0x08, 0x1C, 0x08, 0x08, 0x08],
        'g' => [0, 0, 0x0F, 0x11, 0x0F, 0x01, 0x0E],
        'h' => [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11],
        'i' => [0x04, 0, 0x0C, 0x04, 0x04, 0x04, 0x0E],
        'k' => [0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12],
        'l' => [0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'm' => [0, 0, 0x1A, 0x15, 0x15, 0x11, 0x11],
        'n' => [0, 0, 0x16, 0x19, 0x11, 0x11, 0x11],
        'o' => [0, 0, 0x0E, 0x11, 0x11, 0x11, 0x0E],
        'p' => [0, 0, 0x1E, 0x11, 0x1E, 0x10, 0x10],
        'r' => [0, 0, 0x16, 0x19, 0x10, 0x10, 0x10],
        's' => [0, 0, 0x0E, 0x10, 0x0E, 0x01, 0x1E],
        't' => [0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06],
        'u' => [0, 0, 0x11, 0x11, 0x11, 0x13, 0x0D],
        'v' => [0, 0, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'w' => [0, 0, 0x11, 0x11, 0x15, 0x15, 0x0A],
        'x' => [0, 0, 0x11, 0x0A, 0x04, 0x0A, 0x11],
        'y' => [0, 0, 0x11, 0x11, 0x0F, 0x01, 0x0E],
        c if c.is_ascii_uppercase() => glyph(c.to_ascii_lowercase()),
        _ => [0x1F, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1F],
    }
}

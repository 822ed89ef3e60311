//! The login captcha: a random text and the PNG that shows it.
//!
//! The real portal's captcha was read by a vision model; formwright's default
//! solver is `tesseract IMAGE stdout --psm 7`, so this one has to be readable
//! by plain OCR while still looking like a captcha. The text is drawn in a
//! bold sans-serif TrueType font (DejaVu Sans Bold from Debian's
//! `fonts-dejavu-core`, loaded once at start), each character nudged up or
//! down and spaced a little unevenly, over a speckled pale background with two
//! thin strike lines. The noise is pale enough that OCR's binarisation drops
//! it. A bitmap font was tried first and OCR read under 15% of it.
//!
//! The PNG is written by hand (stored deflate blocks) because the image is
//! tiny and a codec crate would only add build time.

use std::path::{Path, PathBuf};

use ab_glyph::{Font, FontVec, PxScale, ScaleFont};
use rand::Rng;

/// Characters a captcha may contain: no 0/O, 1/I, which people (and OCR)
/// confuse. The profile's `charset` must match this.
pub const CHARSET: &str = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// How many characters a captcha has.
pub const LENGTH: usize = 5;

/// Image width in pixels.
pub const WIDTH: usize = 220;
/// Image height in pixels.
pub const HEIGHT: usize = 70;

/// Font size in pixels.
const FONT_PX: f32 = 44.0;

/// Environment variable naming another TrueType font for the captcha.
pub const FONT_ENV: &str = "FORMWRIGHT_CAPTCHA_FONT";

/// Where the font is looked for when [`FONT_ENV`] is not set.
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf",
];

/// Why the captcha could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CaptchaError {
    /// No font file was found.
    #[error(
        "no captcha font found (tried {tried:?}); install fonts-dejavu-core \
         or set {FONT_ENV}"
    )]
    FontMissing {
        /// The paths that were tried.
        tried: Vec<PathBuf>,
    },
    /// The file exists but is not a usable TrueType font.
    #[error("{path} is not a usable TrueType font")]
    FontInvalid {
        /// The font file.
        path: PathBuf,
    },
}

/// Draws captcha images.
pub struct CaptchaPainter {
    font: FontVec,
}

impl std::fmt::Debug for CaptchaPainter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptchaPainter").finish_non_exhaustive()
    }
}

impl CaptchaPainter {
    /// Loads the font from [`FONT_ENV`] or the first of the usual places.
    pub fn load() -> Result<Self, CaptchaError> {
        let tried: Vec<PathBuf> = match std::env::var_os(FONT_ENV) {
            Some(path) => vec![PathBuf::from(path)],
            None => FONT_PATHS.iter().map(PathBuf::from).collect(),
        };
        for path in &tried {
            if let Ok(bytes) = std::fs::read(path) {
                return Self::from_bytes(path, bytes);
            }
        }
        Err(CaptchaError::FontMissing { tried })
    }

    fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self, CaptchaError> {
        let font = FontVec::try_from_vec(bytes).map_err(|_| CaptchaError::FontInvalid {
            path: path.to_path_buf(),
        })?;
        Ok(Self { font })
    }

    /// Draws `text` as a PNG.
    pub fn render_png(&self, text: &str, rng: &mut impl Rng) -> Vec<u8> {
        let font = self.font.as_scaled(PxScale::from(FONT_PX));

        // Ink coverage per pixel, 0.0 (background) to 1.0 (text).
        let mut ink = vec![0f32; WIDTH * HEIGHT];
        let advance: f32 = text.chars().map(|c| font.h_advance(font.glyph_id(c))).sum();
        let spare = WIDTH as f32 - advance - 4.0 * 6.0;
        let mut x = (spare / 2.0).max(4.0);
        let baseline = (HEIGHT as f32 + font.ascent() * 0.7) / 2.0 + 2.0;
        for c in text.chars() {
            let id = font.glyph_id(c);
            let y = baseline + rng.gen_range(-3.0..3.0);
            let glyph = id.with_scale_and_position(FONT_PX, ab_glyph::point(x, y));
            if let Some(outline) = self.font.outline_glyph(glyph) {
                let bounds = outline.px_bounds();
                outline.draw(|gx, gy, coverage| {
                    let px = bounds.min.x as i32 + gx as i32;
                    let py = bounds.min.y as i32 + gy as i32;
                    if (0..WIDTH as i32).contains(&px) && (0..HEIGHT as i32).contains(&py) {
                        let p = py as usize * WIDTH + px as usize;
                        ink[p] = (ink[p] + coverage).min(1.0);
                    }
                });
            }
            x += font.h_advance(id) + rng.gen_range(2.0..5.0);
        }

        let mut rgb = vec![0u8; WIDTH * HEIGHT * 3];
        for (p, &a) in ink.iter().enumerate() {
            let shade: i32 = rng.gen_range(-6..=6);
            let bg = [236 + shade, 241 + shade, 246 + shade];
            let fg = [28, 52, 92];
            for ch in 0..3 {
                let v = bg[ch] as f32 * (1.0 - a) + fg[ch] as f32 * a;
                rgb[p * 3 + ch] = v.clamp(0.0, 255.0) as u8;
            }
        }

        // Speckle and two thin strike lines, in a pale colour.
        for _ in 0..(WIDTH * HEIGHT / 40) {
            let x = rng.gen_range(0..WIDTH);
            let y = rng.gen_range(0..HEIGHT);
            put(&mut rgb, x, y, [170, 184, 204]);
        }
        for _ in 0..2 {
            let y0 = rng.gen_range(8..HEIGHT - 8) as f32;
            let y1 = rng.gen_range(8..HEIGHT - 8) as f32;
            for x in 0..WIDTH {
                let y = y0 + (y1 - y0) * x as f32 / WIDTH as f32;
                put(&mut rgb, x, y.round() as usize, [160, 176, 200]);
            }
        }

        encode_png(WIDTH as u32, HEIGHT as u32, &rgb)
    }
}

/// A fresh random captcha text.
pub fn random_text(rng: &mut impl Rng) -> String {
    let chars: Vec<char> = CHARSET.chars().collect();
    (0..LENGTH)
        .map(|_| chars[rng.gen_range(0..chars.len())])
        .collect()
}

/// Paints one pixel over the background, but never over the text.
fn put(rgb: &mut [u8], x: usize, y: usize, colour: [u8; 3]) {
    if x >= WIDTH || y >= HEIGHT {
        return;
    }
    let p = (y * WIDTH + x) * 3;
    if rgb[p] < 150 {
        return;
    }
    rgb[p..p + 3].copy_from_slice(&colour);
}

/// Encodes 8-bit RGB pixels as a PNG with uncompressed deflate blocks.
pub fn encode_png(width: u32, height: u32, rgb: &[u8]) -> Vec<u8> {
    let row_len = width as usize * 3;

    // Each scanline starts with filter type 0 (none).
    let mut raw = Vec::with_capacity((row_len + 1) * height as usize);
    for row in rgb.chunks(row_len) {
        raw.push(0);
        raw.extend_from_slice(row);
    }

    let mut zlib = vec![0x78, 0x01];
    let mut blocks = raw.chunks(65_535).peekable();
    while let Some(block) = blocks.next() {
        let last = blocks.peek().is_none();
        zlib.push(u8::from(last));
        // A stored block's length always fits: chunks are at most 65 535.
        let len = block.len() as u16;
        zlib.extend_from_slice(&len.to_le_bytes());
        zlib.extend_from_slice(&(!len).to_le_bytes());
        zlib.extend_from_slice(block);
    }
    zlib.extend_from_slice(&adler32(&raw).to_be_bytes());

    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    // Bit depth 8, colour type 2 (RGB), deflate, adaptive filters, no
    // interlace.
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);

    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &zlib);
    chunk(&mut png, b"IEND", &[]);
    png
}

fn chunk(png: &mut Vec<u8>, kind: &[u8; 4], body: &[u8]) {
    // PNG chunks are far below 4 GiB here.
    png.extend_from_slice(&(body.len() as u32).to_be_bytes());
    png.extend_from_slice(kind);
    png.extend_from_slice(body);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(body);
    png.extend_from_slice(&crc.finalize().to_be_bytes());
}

fn adler32(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in bytes {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    (b << 16) | a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_text_uses_only_the_charset() {
        let mut rng = rand::thread_rng();
        for _ in 0..100 {
            let text = random_text(&mut rng);
            assert_eq!(text.len(), LENGTH);
            assert!(text.chars().all(|c| CHARSET.contains(c)), "{text}");
        }
    }

    #[test]
    fn png_has_signature_and_size() {
        let painter = CaptchaPainter::load().expect("captcha font");
        let png = painter.render_png("AB234", &mut rand::thread_rng());
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        let w = u32::from_be_bytes([png[16], png[17], png[18], png[19]]);
        let h = u32::from_be_bytes([png[20], png[21], png[22], png[23]]);
        assert_eq!((w as usize, h as usize), (WIDTH, HEIGHT));
    }
}

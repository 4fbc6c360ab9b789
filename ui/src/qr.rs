//! QR codes as images for the window (the safety numbers, so that a number can be compared by
//! scanning as well as by reading).

#![forbid(unsafe_code)]

use qrcode::{Color, EcLevel, QrCode};
use slint::{Image, Rgb8Pixel, SharedPixelBuffer};

/// Pixels per module: a label and its 30 digits (version 3 or 4 at medium correction, 29 or 33
/// modules) are 148–164 px wide with the margin.
const SCALE: usize = 4;
/// The blank margin scanners need, in modules (the standard's minimum).
const QUIET: usize = 4;

/// `text` as a black-on-white QR code with medium error correction, or `None` if it does not
/// fit in one (it is then shown as text only).
pub fn image(text: &str) -> Option<Image> {
    let (side, pixels) = pixels(text)?;
    let side32 = u32::try_from(side).ok()?;
    let mut buffer = SharedPixelBuffer::<Rgb8Pixel>::new(side32, side32);
    for (out, &dark) in buffer.make_mut_slice().iter_mut().zip(pixels.iter()) {
        let v = if dark { 0 } else { 255 };
        *out = Rgb8Pixel { r: v, g: v, b: v };
    }
    Some(Image::from_rgb8(buffer))
}

/// The code's pixels row by row (true: dark) and its side in pixels.
pub fn pixels(text: &str) -> Option<(usize, Vec<bool>)> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M).ok()?;
    let modules = code.width();
    let colors = code.to_colors();
    let side = (modules + 2 * QUIET) * SCALE;
    let mut out = vec![false; side * side];
    for y in 0..side {
        for x in 0..side {
            let (mx, my) = (
                (x / SCALE).checked_sub(QUIET),
                (y / SCALE).checked_sub(QUIET),
            );
            if let (Some(mx), Some(my)) = (mx, my)
                && mx < modules
                && my < modules
            {
                out[y * side + x] = colors[my * modules + mx] == Color::Dark;
            }
        }
    }
    Some((side, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a scanner reads back from the pixels the window shows.
    fn scan(side: usize, pixels: &[bool]) -> String {
        let mut img = rqrr::PreparedImage::prepare_from_greyscale(side, side, |x, y| {
            if pixels[y * side + x] { 0 } else { 255 }
        });
        let grids = img.detect_grids();
        assert_eq!(grids.len(), 1, "one code in the image");
        let (_, content) = grids[0].decode().expect("the code decodes");
        content
    }

    #[test]
    fn a_safety_number_reads_back_from_its_code() {
        let text = "desk-1: 12345 67890 13579 24680 11223 34455";
        let (side, dark) = pixels(text).expect("it fits");
        assert_eq!(scan(side, &dark), text);
        // Labels are UTF-8 (Persian, French): they read back whole too.
        let text = "میز ۱ — bureau 2: 00000 99999 12121 34343 56565 78787";
        let (side, dark) = pixels(text).expect("it fits");
        assert_eq!(scan(side, &dark), text);
        assert!(image(text).is_some());
    }

    #[test]
    fn text_too_long_for_a_code_gives_none() {
        assert!(pixels(&"x".repeat(5000)).is_none());
    }
}

//! A link's QR code as a Slint image: one pixel per module, inside the
//! four-module quiet zone a scanner needs. The view scales it up without
//! smoothing (`image-rendering: pixelated`), so it stays sharp at any size.

use qrcode::{Color, EcLevel, QrCode};
use slint::{Image, Rgb8Pixel, SharedPixelBuffer};

/// Modules of light margin on each side.
const QUIET: usize = 4;

/// The QR code of `text` (None when it is too long for one).
pub fn image(text: &str) -> Option<Image> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M).ok()?;
    let width = code.width();
    let side = width + 2 * QUIET;
    let mut buffer = SharedPixelBuffer::<Rgb8Pixel>::new(side as u32, side as u32);
    let pixels = buffer.make_mut_slice();
    pixels.fill(Rgb8Pixel { r: 255, g: 255, b: 255 });
    for (i, color) in code.to_colors().into_iter().enumerate() {
        if color == Color::Dark {
            let (x, y) = (i % width + QUIET, i / width + QUIET);
            pixels[y * side + x] = Rgb8Pixel { r: 0, g: 0, b: 0 };
        }
    }
    Some(Image::from_rgb8(buffer))
}

#[cfg(test)]
mod tests {
    /// A scanner reads back the link, at the size the window shows it.
    #[test]
    fn the_code_reads_back_as_the_link() {
        let link = "peerconn://192.168.1.7:50000?code=4821-0937#85dfd0cd699079768b6828e8856eda34eb850e1ce6f4b38f84ddbd0a6790c23e";
        let image = super::image(link).expect("a link fits in a QR code");
        let pixels = image.to_rgb8().expect("an RGB image");
        let (side, scale) = (pixels.width() as usize, 4);
        let data = pixels.as_slice();
        let mut grey = rqrr::PreparedImage::prepare_from_greyscale(side * scale, side * scale, |x, y| {
            data[(y / scale) * side + x / scale].r
        });
        let grids = grey.detect_grids();
        assert_eq!(grids.len(), 1);
        let (_, text) = grids[0].decode().expect("it decodes");
        assert_eq!(text, link);
    }
}

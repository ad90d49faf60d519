//! QR codes drawn on the server: inline SVG for pages, PNG for e-mail (where SVG does not
//! show). Both draw the same modules with the four-module quiet zone scanners need.

use qrcode::{Color, EcLevel, QrCode};

/// Pixels per module in PNG images: 57 modules and the quiet zone make a 390-pixel square.
const PNG_SCALE: usize = 6;
/// Modules of white around the code.
const QUIET_ZONE: usize = 4;

fn code(text: &str) -> Result<QrCode, String> {
    // Medium error correction: a phone screen or a printed e-mail may be scuffed or glared.
    QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
        .map_err(|e| format!("QR code: {e}"))
}

/// The QR code of `text` as an inline SVG element.
pub(crate) fn svg(text: &str) -> Result<String, String> {
    let svg = code(text)?
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(240, 240)
        .quiet_zone(true)
        .build();
    // The renderer writes a standalone document; inline, only the element is wanted.
    Ok(svg.find("<svg").map_or(svg.clone(), |at| svg[at..].to_owned()))
}

/// The QR code of `text` as a black-and-white PNG image.
pub(crate) fn png(text: &str) -> Result<Vec<u8>, String> {
    let code = code(text)?;
    let modules = code.width();
    let colors = code.to_colors();
    let side = (modules + 2 * QUIET_ZONE) * PNG_SCALE;
    let dark = |x: usize, y: usize| {
        let (mx, my) =
            ((x / PNG_SCALE).checked_sub(QUIET_ZONE), (y / PNG_SCALE).checked_sub(QUIET_ZONE));
        match (mx, my) {
            (Some(mx), Some(my)) if mx < modules && my < modules => {
                colors.get(my * modules + mx) == Some(&Color::Dark)
            }
            _ => false,
        }
    };
    // One bit per pixel, most significant first; a set bit is white.
    let row_bytes = side.div_ceil(8);
    let mut pixels = vec![0u8; row_bytes * side];
    for y in 0..side {
        for x in 0..side {
            if !dark(x, y)
                && let Some(byte) = pixels.get_mut(y * row_bytes + x / 8)
            {
                *byte |= 0x80 >> (x % 8);
            }
        }
    }
    let side = u32::try_from(side).map_err(|_| "QR code too large".to_owned())?;
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::One);
    let mut writer = encoder.write_header().map_err(|e| format!("PNG: {e}"))?;
    writer.write_image_data(&pixels).map_err(|e| format!("PNG: {e}"))?;
    writer.finish().map_err(|e| format!("PNG: {e}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_png_reads_back_as_the_text() {
        let text = format!("CQ1:{}", "A2".repeat(98));
        let png = png(&text).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        assert_eq!(custody_testkit::mail::qr_in_png(&png), text);
    }

    #[test]
    fn the_svg_is_an_inline_element() {
        let svg = svg("otpauth://totp/Custody").unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("</svg>"));
    }
}

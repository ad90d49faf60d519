//! Reading e-mails the way a recipient's phone would: the pickup QR code in the message's
//! inline image, decoded from its pixels.

use data_encoding::BASE64_MIME_PERMISSIVE;

/// The text of the QR code in the inline PNG image of the e-mail `raw` (as written by the
/// file outbox or received over SMTP). Panics if there is not exactly one.
pub fn qr_in_email(raw: &str) -> String {
    let image =
        raw.split("Content-Type: image/png").nth(1).expect("an inline PNG image in the e-mail");
    // The part's body starts after its headers and ends at the next boundary.
    let body = image.split("\r\n\r\n").nth(1).or_else(|| image.split("\n\n").nth(1)).expect("body");
    let base64: String = body.lines().take_while(|l| !l.starts_with("--")).collect();
    let png = BASE64_MIME_PERMISSIVE.decode(base64.trim().as_bytes()).expect("base64 image");
    qr_in_png(&png)
}

/// The text of the one QR code in a PNG image.
pub fn qr_in_png(png: &[u8]) -> String {
    let mut reader = png::Decoder::new(std::io::Cursor::new(png)).read_info().expect("a PNG image");
    let mut pixels = vec![0; reader.output_buffer_size().expect("image size")];
    let info = reader.next_frame(&mut pixels).expect("a frame");
    let (width, height, row) = (info.width as usize, info.height as usize, info.line_size);
    let bits = info.bit_depth as usize;
    assert_eq!((info.color_type, bits), (png::ColorType::Grayscale, 1), "a black-and-white image");
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(width, height, |x, y| {
        let byte = pixels.get(y * row + x / 8).copied().unwrap_or(0);
        if byte & (0x80 >> (x % 8)) == 0 { 0 } else { 255 }
    });
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    grids[0].decode().expect("a readable QR code").1
}

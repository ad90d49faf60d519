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

/// The text of the one QR code in a PNG image: the e-mail's own, or a browser's screenshot.
pub fn qr_in_png(png: &[u8]) -> String {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png));
    // Every layout as 8-bit samples: palettes and 1-bit grey expanded, 16-bit cut.
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().expect("a PNG image");
    let mut pixels = vec![0; reader.output_buffer_size().expect("image size")];
    let info = reader.next_frame(&mut pixels).expect("a frame");
    let (width, height, row) = (info.width as usize, info.height as usize, info.line_size);
    let channels = info.color_type.samples();
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(width, height, |x, y| {
        let at = y * row + x * channels;
        let sample = |i: usize| u32::from(pixels.get(at + i).copied().unwrap_or(0));
        let grey = if channels >= 3 { (sample(0) + sample(1) + sample(2)) / 3 } else { sample(0) };
        grey as u8
    });
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    grids[0].decode().expect("a readable QR code").1
}

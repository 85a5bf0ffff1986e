//! Image input for the task APIs: decoding within limits, and the preprocessing the models
//! were trained with (RGB, bilinear resize to the input size, u8/255 in NHWC order).

use accel_core::{Error, Result};
use image::imageops::FilterType;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};
use std::borrow::Cow;
use std::io::Cursor;
use std::path::Path;

/// One input image: a file, encoded bytes (PNG, JPEG, BMP, GIF, TIFF, WebP), or pixels.
#[derive(Clone, Copy, Debug)]
pub enum ImageSource<'a> {
    Path(&'a Path),
    Bytes(&'a [u8]),
    Rgb(&'a RgbImage),
}

impl<'a> ImageSource<'a> {
    /// How errors name this image: the path, or its position in the call for in-memory data.
    pub fn name(&self, index: usize) -> String {
        match self {
            ImageSource::Path(p) => p.display().to_string(),
            ImageSource::Bytes(_) => format!("#{index} (encoded bytes)"),
            ImageSource::Rgb(_) => format!("#{index} (RGB pixels)"),
        }
    }
}

impl<'a> From<&'a Path> for ImageSource<'a> {
    fn from(p: &'a Path) -> Self {
        ImageSource::Path(p)
    }
}

impl<'a> From<&'a std::path::PathBuf> for ImageSource<'a> {
    fn from(p: &'a std::path::PathBuf) -> Self {
        ImageSource::Path(p)
    }
}

impl<'a> From<&'a [u8]> for ImageSource<'a> {
    fn from(b: &'a [u8]) -> Self {
        ImageSource::Bytes(b)
    }
}

impl<'a> From<&'a RgbImage> for ImageSource<'a> {
    fn from(i: &'a RgbImage) -> Self {
        ImageSource::Rgb(i)
    }
}

/// What an input image may cost before it is refused with [`Error::Image`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ImageLimits {
    /// Largest file read into memory, in bytes. Default 256 MiB.
    pub max_file_bytes: u64,
    /// Largest JPEG decoded at full size, in pixels. Default 24 MP. A larger JPEG is decoded
    /// downscaled by 1/2, 1/4 or 1/8 in the DCT domain (never held at full size), to the
    /// smallest scale that still covers the model input. Other formats cannot be decoded
    /// smaller than stored: they are decoded at full size within `max_alloc_bytes`.
    pub max_pixels: u64,
    /// Ceiling for a decoder's own allocations, in bytes (`image::Limits::max_alloc`).
    /// Default 256 MiB.
    pub max_alloc_bytes: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits {
            max_file_bytes: 256 << 20,
            max_pixels: 24_000_000,
            max_alloc_bytes: 256 << 20,
        }
    }
}

/// A decoded image, upright (EXIF orientation applied), as RGB8.
#[derive(Clone, Debug)]
pub struct DecodedImage<'a> {
    pub image: Cow<'a, RgbImage>,
    /// The image's own size (upright) before any DCT downscaling.
    pub source_width: u32,
    pub source_height: u32,
    /// 1 when decoded at full size; 2, 4 or 8 when a large JPEG was decoded at 1/N scale.
    pub downscale: u32,
}

fn image_err(name: &str, reason: impl Into<String>) -> Error {
    Error::Image {
        source_name: name.to_string(),
        reason: reason.into(),
    }
}

const FORMATS: &str = "PNG, JPEG, BMP, GIF, TIFF or WebP";

fn format_name(f: ImageFormat) -> String {
    f.extensions_str()
        .first()
        .map_or_else(|| format!("{f:?}"), |e| e.to_uppercase())
}

/// An `image` error as a reason a person can act on.
fn decode_reason(format: ImageFormat, e: image::ImageError) -> String {
    use image::ImageError as E;
    let f = format_name(format);
    match e {
        E::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            format!("truncated {f} file: the data ends early")
        }
        E::Decoding(d) => format!("corrupt or truncated {f} file: {d}"),
        E::Limits(l) => format!("too large to decode within ImageLimits::max_alloc_bytes: {l}"),
        E::Unsupported(u) => format!("{u}; accel reads {FORMATS}"),
        other => format!("cannot decode {f}: {other}"),
    }
}

/// Decodes one image. `min_side` is the smallest width and height a large JPEG may be
/// downscaled to (the model input's larger side, so both axes keep enough pixels whatever
/// the EXIF rotation). `name` is what errors call the image.
pub fn decode_image<'a>(
    source: &ImageSource<'a>,
    name: &str,
    limits: &ImageLimits,
    min_side: u32,
) -> Result<DecodedImage<'a>> {
    match source {
        ImageSource::Rgb(img) => {
            if img.width() == 0 || img.height() == 0 {
                return Err(image_err(
                    name,
                    format!("has no pixels ({}x{})", img.width(), img.height()),
                ));
            }
            Ok(DecodedImage {
                source_width: img.width(),
                source_height: img.height(),
                image: Cow::Borrowed(*img),
                downscale: 1,
            })
        }
        ImageSource::Bytes(bytes) => {
            if bytes.is_empty() {
                return Err(image_err(name, "no data (0 bytes)"));
            }
            decode_bytes(bytes, name, limits, min_side)
        }
        ImageSource::Path(path) => {
            let bytes = read_file(path, name, limits)?;
            decode_bytes(&bytes, name, limits, min_side)
        }
    }
}

fn read_file(path: &Path, name: &str, limits: &ImageLimits) -> Result<Vec<u8>> {
    use std::io::Read;
    let cannot = |e: std::io::Error| image_err(name, format!("cannot read it: {e}"));
    let file = std::fs::File::open(path).map_err(cannot)?;
    if file.metadata().map_err(cannot)?.is_dir() {
        return Err(image_err(name, "is a directory, not an image file"));
    }
    // Read at most one byte past the limit: the size in the metadata can lie (a pipe, a
    // device, a growing file).
    let mut bytes = Vec::new();
    file.take(limits.max_file_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > limits.max_file_bytes {
        return Err(image_err(
            name,
            format!(
                "the file is over the {} MiB limit (ImageLimits::max_file_bytes)",
                limits.max_file_bytes >> 20
            ),
        ));
    }
    if bytes.is_empty() {
        return Err(image_err(name, "the file is empty (0 bytes)"));
    }
    Ok(bytes)
}

fn decode_bytes(
    bytes: &[u8],
    name: &str,
    limits: &ImageLimits,
    min_side: u32,
) -> Result<DecodedImage<'static>> {
    // The content decides the format, not the file name: every format read here has a magic
    // number, so a text file called x.png is reported as "not an image" rather than a bad PNG.
    let format = image::guess_format(bytes).map_err(|_| {
        image_err(
            name,
            format!("not an image: the content is not {FORMATS} data"),
        )
    })?;
    let mut image_limits = image::Limits::default();
    image_limits.max_alloc = Some(limits.max_alloc_bytes);
    let reader = || {
        let mut r = ImageReader::with_format(Cursor::new(bytes), format);
        r.limits(image_limits.clone());
        r
    };
    let (w, h) = reader()
        .into_dimensions()
        .map_err(|e| image_err(name, decode_reason(format, e)))?;
    if w == 0 || h == 0 {
        return Err(image_err(name, format!("has no pixels ({w}x{h})")));
    }
    let pixels = u64::from(w) * u64::from(h);
    // Only JPEG can be decoded smaller than it is stored; other formats are decoded at full
    // size as long as that fits max_alloc_bytes (checked below), since refusing them would
    // leave the caller to do the same decode.
    if pixels > limits.max_pixels && format == ImageFormat::Jpeg {
        return decode_large_jpeg(bytes, (w, h), name, limits, min_side);
    }
    let mut decoder = reader()
        .into_decoder()
        .map_err(|e| image_err(name, decode_reason(format, e)))?;
    // A broken EXIF block is not worth refusing the pixels for: keep them as stored.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    if decoder.total_bytes() > limits.max_alloc_bytes {
        return Err(image_err(
            name,
            format!(
                "{w}x{h} {:?} needs {} MiB to decode, above the {} MiB limit \
                 (ImageLimits::max_alloc_bytes)",
                decoder.color_type(),
                decoder.total_bytes() >> 20,
                limits.max_alloc_bytes >> 20
            ),
        ));
    }
    let mut img = DynamicImage::from_decoder(decoder)
        .map_err(|e| image_err(name, decode_reason(format, e)))?;
    img.apply_orientation(orientation);
    let rgb = img.into_rgb8();
    Ok(DecodedImage {
        source_width: rgb.width(),
        source_height: rgb.height(),
        image: Cow::Owned(rgb),
        downscale: 1,
    })
}

/// The largest JPEG DCT reduction (8, 4, 2 or 1) that keeps both sides at least `min_side`.
pub fn jpeg_downscale(width: u32, height: u32, min_side: u32) -> u32 {
    let mut d = 8;
    while d > 1 && (width.div_ceil(d) < min_side || height.div_ceil(d) < min_side) {
        d /= 2;
    }
    d
}

fn swaps_axes(o: Orientation) -> bool {
    matches!(
        o,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

/// A JPEG above `max_pixels`, decoded by jpeg-decoder at 1/2, 1/4 or 1/8 scale: the IDCT
/// produces the reduced image directly, so the full-size pixels never exist. (A progressive
/// JPEG still holds its DCT coefficients, about 2 bytes per sample, while decoding.)
fn decode_large_jpeg(
    bytes: &[u8],
    (w, h): (u32, u32),
    name: &str,
    limits: &ImageLimits,
    min_side: u32,
) -> Result<DecodedImage<'static>> {
    let d = jpeg_downscale(w, h, min_side);
    let (sw, sh) = (w.div_ceil(d), h.div_ceil(d));
    if u64::from(sw) * u64::from(sh) > limits.max_pixels {
        return Err(image_err(
            name,
            format!(
                "{w}x{h} JPEG is still {sw}x{sh} at 1/{d} scale, above the {:.1} MP limit \
                 (ImageLimits::max_pixels)",
                limits.max_pixels as f64 / 1e6
            ),
        ));
    }
    let jpeg_err =
        |e: jpeg_decoder::Error| image_err(name, format!("corrupt or truncated JPEG: {e}"));
    let to_u16 = |v: u32| u16::try_from(v).map_err(|_| image_err(name, "JPEG size out of range"));
    let mut dec = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    dec.set_max_decoding_buffer_size(usize::try_from(limits.max_alloc_bytes).unwrap_or(usize::MAX));
    let (ow, oh) = dec.scale(to_u16(sw)?, to_u16(sh)?).map_err(jpeg_err)?;
    let data = dec.decode().map_err(jpeg_err)?;
    let (ow, oh) = (u32::from(ow), u32::from(oh));
    let n = ow as usize * oh as usize;
    // The layout follows from the length, which avoids jpeg-decoder's info() (it panics on
    // component counts it does not know).
    let rgb = match data.len() {
        len if n > 0 && len == 3 * n => RgbImage::from_raw(ow, oh, data),
        len if n > 0 && len == n => {
            RgbImage::from_raw(ow, oh, data.iter().flat_map(|&v| [v, v, v]).collect())
        }
        len if n > 0 && len == 4 * n => RgbImage::from_raw(ow, oh, cmyk_to_rgb(&data)),
        _ => None,
    }
    .ok_or_else(|| {
        image_err(
            name,
            format!(
                "unsupported JPEG layout at {ow}x{oh} (16-bit and lossless JPEGs are not \
                 read downscaled)"
            ),
        )
    })?;
    let orientation = dec
        .exif_data()
        .and_then(Orientation::from_exif_chunk)
        .unwrap_or(Orientation::NoTransforms);
    let mut img = DynamicImage::ImageRgb8(rgb);
    img.apply_orientation(orientation);
    let (source_width, source_height) = if swaps_axes(orientation) {
        (h, w)
    } else {
        (w, h)
    };
    Ok(DecodedImage {
        image: Cow::Owned(img.into_rgb8()),
        source_width,
        source_height,
        downscale: d,
    })
}

/// jpeg-decoder's CMYK output is Adobe's inverted CMYK.
fn cmyk_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    cmyk.chunks_exact(4)
        .flat_map(|p| {
            let k = 255 - u16::from(p[3]);
            let ch = |c: u8| ((255 - u16::from(c)) * k / 255) as u8;
            [ch(p[0]), ch(p[1]), ch(p[2])]
        })
        .collect()
}

/// The image at the model's input size: bilinear (`Triangle`, as training resized), or the
/// image itself when it already has that size.
pub fn resize_for_model(img: &RgbImage, width: u32, height: u32) -> Cow<'_, RgbImage> {
    if img.width() == width && img.height() == height {
        Cow::Borrowed(img)
    } else {
        Cow::Owned(image::imageops::resize(
            img,
            width,
            height,
            FilterType::Triangle,
        ))
    }
}

/// Appends the pixels as f32 in [0, 1] (u8 / 255), row-major RGB: one NHWC batch element.
pub fn push_unit_f32(img: &RgbImage, out: &mut Vec<f32>) {
    out.extend(img.as_raw().iter().map(|&v| f32::from(v) / 255.0));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                (x * 7 % 256) as u8,
                (y * 13 % 256) as u8,
                ((x + y) % 256) as u8,
            ])
        })
    }

    #[test]
    fn same_size_is_unchanged_and_borrowed() {
        let img = gradient(350, 50);
        let r = resize_for_model(&img, 350, 50);
        assert!(matches!(r, Cow::Borrowed(_)));
        assert_eq!(r.as_raw(), img.as_raw());
    }

    #[test]
    fn resize_reaches_the_model_size() {
        let img = gradient(1, 1);
        let r = resize_for_model(&img, 128, 128);
        assert_eq!(r.dimensions(), (128, 128));
        // A 1x1 image resizes to a flat image of its one colour.
        assert!(r.pixels().all(|p| p == img.get_pixel(0, 0)));
        let wide = gradient(700, 100);
        assert_eq!(resize_for_model(&wide, 350, 50).dimensions(), (350, 50));
    }

    #[test]
    fn unit_f32_is_u8_over_255() {
        let img = RgbImage::from_raw(2, 1, vec![0, 1, 128, 200, 254, 255]).unwrap();
        let mut out = vec![];
        push_unit_f32(&img, &mut out);
        assert_eq!(out.len(), 6);
        assert!(out.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_eq!(out[0], 0.0);
        assert_eq!(out[5], 1.0);
        assert_eq!(out[2], 128.0 / 255.0);
    }

    #[test]
    fn downscale_keeps_both_sides_covered() {
        assert_eq!(jpeg_downscale(6000, 5000, 128), 8);
        assert_eq!(jpeg_downscale(6000, 5000, 350), 8);
        assert_eq!(jpeg_downscale(2000, 1000, 350), 2);
        assert_eq!(jpeg_downscale(8000, 100, 50), 2);
        assert_eq!(jpeg_downscale(300, 300, 350), 1);
    }

    #[test]
    fn bad_bytes_are_typed_errors() {
        let l = ImageLimits::default();
        for (bytes, want) in [
            (&b""[..], "no data"),
            (b"hello, world", "not an image"),
            (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "PNG"),
        ] {
            let e = decode_image(&ImageSource::Bytes(bytes), "x", &l, 128).unwrap_err();
            assert!(matches!(e, Error::Image { .. }), "{e}");
            assert!(e.to_string().contains(want), "{e}");
        }
    }

    #[test]
    fn png_round_trip_and_pixel_limit() {
        let img = gradient(40, 30);
        let mut png = vec![];
        img.write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
            .unwrap();
        let l = ImageLimits::default();
        let d = decode_image(&ImageSource::Bytes(&png), "x", &l, 128).unwrap();
        assert_eq!(d.image.as_raw(), img.as_raw());
        assert_eq!(d.downscale, 1);
        // Over max_pixels a PNG is still decoded (it cannot be decoded smaller)...
        let few_pixels = ImageLimits {
            max_pixels: 100,
            ..ImageLimits::default()
        };
        let d = decode_image(&ImageSource::Bytes(&png), "x", &few_pixels, 128).unwrap();
        assert_eq!(d.image.as_raw(), img.as_raw());
        // ...but not beyond the allocation ceiling.
        let small = ImageLimits {
            max_alloc_bytes: 1000,
            ..ImageLimits::default()
        };
        let e = decode_image(&ImageSource::Bytes(&png), "x", &small, 128).unwrap_err();
        assert!(e.to_string().contains("max_alloc_bytes"), "{e}");
        // Cut short after the header: refused, no panic.
        let e = decode_image(&ImageSource::Bytes(&png[..60]), "x", &l, 128).unwrap_err();
        assert!(matches!(e, Error::Image { .. }), "{e}");
    }
}

//! A 6000x5000 JPEG is decoded downscaled in the DCT domain, never at full size. Alone in its
//! test binary because it counts the process's allocations.

use accel::DefectInspector;
use accel::tasks::{ImageLimits, ImageSource, decode_image};
use image::RgbImage;
use image::codecs::jpeg::JpegEncoder;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting live bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            LIVE.fetch_sub(l.size(), Ordering::Relaxed);
            grew(new);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Peak bytes allocated on top of what was live when `f` started.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed) - base)
}

const W: u32 = 6000;
const H: u32 = 5000;
/// Full-size RGB8 is 90 MB; a third of that is far above the 1/8-scale decode's needs.
const FULL_RGB: usize = (W * H * 3) as usize;

#[test]
fn huge_jpeg_is_decoded_downscaled() {
    let jpeg = {
        let img = RgbImage::from_fn(W, H, |x, y| {
            image::Rgb([
                (x / 24 % 256) as u8,
                (y / 20 % 256) as u8,
                ((x ^ y) % 256) as u8,
            ])
        });
        let mut out = Vec::new();
        JpegEncoder::new_with_quality(&mut out, 50)
            .encode_image(&img)
            .expect("JPEG encodes");
        out
    };

    let (decoded, peak) = peak_during(|| {
        decode_image(
            &ImageSource::Bytes(&jpeg),
            "huge",
            &ImageLimits::default(),
            128,
        )
    });
    let decoded = decoded.expect("huge JPEG decodes");
    assert_eq!(decoded.downscale, 8);
    assert_eq!(decoded.image.dimensions(), (W / 8, H / 8));
    assert_eq!((decoded.source_width, decoded.source_height), (W, H));
    println!("decode of a {W}x{H} JPEG: peak {:.1} MB", peak as f64 / 1e6);
    assert!(peak < FULL_RGB / 3, "decoding peaked at {peak} bytes");

    // The model wants 350 pixels on a side for the meter: still 1/8 (750x625).
    let meter = decode_image(
        &ImageSource::Bytes(&jpeg),
        "huge",
        &ImageLimits::default(),
        350,
    )
    .unwrap();
    assert_eq!(meter.downscale, 8);

    let inspector = DefectInspector::new("cpu").unwrap().threads(2);
    // Compile first so the measured peak is the image's, not the weights'.
    let small = RgbImage::new(8, 8);
    inspector
        .inspect(&[ImageSource::Rgb(&small)])
        .unwrap()
        .remove(0)
        .unwrap();
    let (result, peak) = peak_during(|| inspector.inspect(&[ImageSource::Bytes(&jpeg)]));
    let i = result.unwrap().remove(0).unwrap();
    assert_eq!((i.width, i.height), (W / 8, H / 8));
    assert_eq!((i.source_width, i.source_height), (W, H));
    assert_eq!(i.mask.dimensions(), (W / 8, H / 8));
    println!(
        "inspect of a {W}x{H} JPEG: peak {:.1} MB",
        peak as f64 / 1e6
    );
    assert!(peak < FULL_RGB / 3, "inspect peaked at {peak} bytes");

    // Above max_pixels and not a JPEG: decoded at full size (it cannot be decoded smaller),
    // unless that would pass the allocation ceiling, which the error then names.
    let mut tiny = ImageLimits::default();
    tiny.max_pixels = 1000;
    let mut png = Vec::new();
    RgbImage::new(100, 100)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let d = decode_image(&ImageSource::Bytes(&png), "big.png", &tiny, 128).unwrap();
    assert_eq!((d.image.width(), d.downscale), (100, 1));
    tiny.max_alloc_bytes = 10_000;
    let e = decode_image(&ImageSource::Bytes(&png), "big.png", &tiny, 128).unwrap_err();
    assert!(e.to_string().contains("max_alloc_bytes"), "{e}");
}

//! MeterReader and DefectInspector end to end on synthetic images with the shipped models.
//! The weights may be random, so these check shapes and invariants, never particular answers.

use accel::tasks::DEFAULT_AREA_THRESHOLD_PCT;
use accel::{DefectInspector, Error, ImageSource, Inspection, MeterReader};
use image::{ImageFormat, RgbImage};
use std::io::Cursor;

/// Deterministic texture: a few stripes and blobs so the models see structure, not a flat field.
fn synthetic(w: u32, h: u32, seed: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let v = (x.wrapping_mul(31) ^ y.wrapping_mul(17) ^ seed.wrapping_mul(101)) % 256;
        let stripe = if (x / 7 + seed).is_multiple_of(3) {
            200
        } else {
            40
        };
        image::Rgb([v as u8, stripe, ((x + y + seed) % 256) as u8])
    })
}

fn png(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
        .expect("PNG encodes");
    out
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("accel-tasks-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn meter_reader_shapes_and_invariants() {
    let reader = MeterReader::new("cpu").unwrap().threads(2);
    assert_eq!(reader.backend(), "cpu");
    let same = synthetic(350, 50, 1);
    let bigger = synthetic(700, 100, 2);
    let tiny = synthetic(1, 1, 3);
    let tall = synthetic(20, 300, 4);
    let encoded = png(&bigger);
    let sources = [
        ImageSource::Rgb(&same),
        ImageSource::Bytes(&encoded),
        ImageSource::Bytes(b""),
        ImageSource::Rgb(&tiny),
        ImageSource::Rgb(&tall),
    ];
    let results = reader.read(&sources).unwrap();
    assert_eq!(results.len(), sources.len());
    match &results[2] {
        Err(Error::Image { source_name, .. }) => {
            assert!(source_name.contains("#2"), "{source_name}")
        }
        other => panic!("empty bytes gave {other:?}"),
    }
    for r in results.iter().filter_map(|r| r.as_ref().ok()) {
        assert!(r.reading.bytes().all(|b| b.is_ascii_digit()), "{r:?}");
        assert_eq!(r.reading.len(), r.digits.len());
        assert!((0.0..=1.0).contains(&r.confidence), "{r:?}");
        let mut last_frame = None;
        for d in &r.digits {
            assert!(d.digit <= 9);
            assert!((0.0..=1.0).contains(&d.confidence), "{d:?}");
            assert!(d.frames.0 <= d.frames.1 && d.frames.1 < 87, "{d:?}");
            assert!(last_frame.is_none_or(|l| l < d.frames.0), "{r:?}");
            last_frame = Some(d.frames.1);
        }
        if !r.digits.is_empty() {
            let product: f32 = r.digits.iter().map(|d| d.confidence).product();
            assert!((product - r.confidence).abs() < 1e-6);
        }
    }
    // The same image alone gives the same reading: batching keeps order and independence.
    let alone = reader.read(&[ImageSource::Rgb(&tall)]).unwrap();
    let (a, b) = (alone[0].as_ref().unwrap(), results[4].as_ref().unwrap());
    assert_eq!(a.reading, b.reading);
    assert!((a.confidence - b.confidence).abs() < 1e-3);

    // A digit count other than the expected one is a typed per-image error.
    let n = results[0].as_ref().unwrap().reading.len();
    let strict = MeterReader::new("cpu")
        .unwrap()
        .expected_digits(Some(n + 1));
    match &strict.read(&[ImageSource::Rgb(&same)]).unwrap()[0] {
        Err(e @ Error::DigitCount { expected, .. }) => {
            assert_eq!(*expected, n + 1);
            assert!(e.to_string().contains(&format!("read {n}")), "{e}");
        }
        other => panic!("expected a DigitCount error, got {other:?}"),
    }
    let exact = MeterReader::new("cpu").unwrap().expected_digits(Some(n));
    assert!(exact.read(&[ImageSource::Rgb(&same)]).unwrap()[0].is_ok());
    assert!(reader.read(&[]).unwrap().is_empty());
}

fn check_inspection(i: &Inspection, w: u32, h: u32, threshold_pct: f32) {
    assert_eq!((i.width, i.height), (w, h));
    assert_eq!(i.mask.dimensions(), (w, h));
    assert!(i.mask.as_raw().iter().all(|&v| v == 0 || v == 255));
    let count = i.mask.as_raw().iter().filter(|&&v| v == 255).count() as u64;
    let pct = count as f64 * 100.0 / (f64::from(w) * f64::from(h));
    assert!(
        (f64::from(i.defect_area_pct) - pct).abs() < 1e-4,
        "{} vs {pct}",
        i.defect_area_pct
    );
    assert_eq!(i.regions.iter().map(|r| r.area_px).sum::<u64>(), count);
    assert_eq!(i.defective, i.defect_area_pct > threshold_pct);
    for r in &i.regions {
        assert!(r.width >= 1 && r.height >= 1 && r.x + r.width <= w && r.y + r.height <= h);
        assert!(r.area_px <= u64::from(r.width) * u64::from(r.height));
        assert!(r.mean_prob > 0.5 && r.mean_prob <= 1.0, "{r:?}");
        // Each region's top-left corner pixel row holds at least one of its pixels.
        assert!((r.x..r.x + r.width).any(|x| i.mask.get_pixel(x, r.y).0[0] == 255));
    }
}

#[test]
fn defect_inspector_shapes_and_invariants() {
    // `auto` plans on first use (every backend of this machine against the cpu reference)
    // and then names the winner.
    let inspector = DefectInspector::new("auto").unwrap().threads(2);
    assert_eq!(inspector.backend(), "auto");
    let imgs = [
        synthetic(128, 128, 5),
        synthetic(300, 200, 6),
        synthetic(1, 1, 7),
        synthetic(64, 500, 8),
    ];
    let garbage = b"GIF89a but not really".to_vec();
    let mut sources: Vec<ImageSource> = imgs.iter().map(ImageSource::Rgb).collect();
    sources.insert(1, ImageSource::Bytes(&garbage));
    let results = inspector.inspect(&sources).unwrap();
    let chosen = inspector.backend();
    assert!(
        accel::probe_backends()
            .iter()
            .any(|e| e.id == chosen && e.backend.is_ok()),
        "auto chose '{chosen}'"
    );
    assert_eq!(results.len(), 5);
    assert!(
        matches!(results[1], Err(Error::Image { .. })),
        "{:?}",
        results[1]
    );
    let ok: Vec<&Inspection> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(ok.len(), 4);
    for (i, img) in ok.iter().zip(&imgs) {
        check_inspection(i, img.width(), img.height(), DEFAULT_AREA_THRESHOLD_PCT);
        assert_eq!((i.source_width, i.source_height), img.dimensions());
    }

    // Thresholds move the answer the way they say.
    let none = DefectInspector::new("cpu").unwrap().threshold(1.0);
    let i = none
        .inspect(&[ImageSource::Rgb(&imgs[1])])
        .unwrap()
        .remove(0)
        .unwrap();
    assert_eq!(i.defect_area_pct, 0.0);
    assert!(i.regions.is_empty() && !i.defective);
    let big_only = DefectInspector::new("cpu")
        .unwrap()
        .min_region_px(usize::MAX);
    let i = big_only
        .inspect(&[ImageSource::Rgb(&imgs[1])])
        .unwrap()
        .remove(0)
        .unwrap();
    assert!(i.regions.is_empty() && i.mask.as_raw().iter().all(|&v| v == 0));
    let strict = DefectInspector::new("cpu")
        .unwrap()
        .area_threshold_pct(100.0);
    let i = strict
        .inspect(&[ImageSource::Rgb(&imgs[1])])
        .unwrap()
        .remove(0)
        .unwrap();
    check_inspection(&i, 300, 200, 100.0);
    assert!(!i.defective);
    assert!(
        DefectInspector::new("cpu")
            .unwrap()
            .threshold(f32::NAN)
            .inspect(&[])
            .is_err()
    );
    assert!(
        DefectInspector::new("cpu")
            .unwrap()
            .area_threshold_pct(-1.0)
            .inspect(&[])
            .is_err()
    );

    // save_mask writes a PNG of the mask's size.
    let dir = tmp("mask");
    let path = dir.join("mask.png");
    ok[1].save_mask(&path).unwrap();
    let back = image::open(&path).unwrap().into_luma8();
    assert_eq!(back.as_raw(), ok[1].mask.as_raw());
    assert!(ok[1].save_mask(dir.join("missing/dir/mask.png")).is_err());
}

#[test]
fn files_are_read_and_bad_files_are_named() {
    let dir = tmp("files");
    let good = dir.join("plate.png");
    std::fs::write(&good, png(&synthetic(90, 60, 9))).unwrap();
    let empty = dir.join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    let text = dir.join("notes.png");
    std::fs::write(&text, b"this is not a picture\n").unwrap();
    let truncated = dir.join("truncated.png");
    std::fs::write(&truncated, &png(&synthetic(90, 60, 9))[..200]).unwrap();
    let missing = dir.join("missing.png");
    let inspector = DefectInspector::new("cpu").unwrap();
    let paths = [&good, &empty, &text, &truncated, &missing];
    let sources: Vec<ImageSource> = paths.iter().map(|p| ImageSource::Path(p)).collect();
    let results = inspector.inspect(&sources).unwrap();
    check_inspection(
        results[0].as_ref().unwrap(),
        90,
        60,
        DEFAULT_AREA_THRESHOLD_PCT,
    );
    for (p, r, want) in [
        (&empty, &results[1], "empty"),
        (&text, &results[2], "not an image"),
        (&truncated, &results[3], "PNG"),
        (&missing, &results[4], "cannot read"),
    ] {
        let e = r.as_ref().expect_err("bad file accepted");
        let msg = e.to_string();
        assert!(msg.contains(&p.display().to_string()), "{msg}");
        assert!(msg.contains(want), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }
}

#[test]
fn a_missing_model_or_backend_fails_at_construction() {
    assert!(MeterReader::from_model("/nonexistent/crnn.onnx", "cpu").is_err());
    assert!(matches!(
        DefectInspector::new("no-such-backend"),
        Err(Error::BackendUnavailable { .. })
    ));
    // The meter model's input is 350x50: the U-Net is refused as a meter model at first
    // output check, not with a panic.
    let unet = accel::shipped_model("unet").unwrap();
    let wrong = MeterReader::from_model(&unet, "cpu").unwrap();
    let img = synthetic(10, 10, 1);
    assert!(wrong.read(&[ImageSource::Rgb(&img)]).is_err());
}

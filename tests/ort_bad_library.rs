//! Pointing accel at a file that is not ONNX Runtime gives an error, not a crash. This is its
//! own test binary: a process loads one ORT library, so no real one may be loaded before.

use std::path::Path;

#[test]
fn a_file_that_is_not_onnx_runtime_is_an_error() {
    let dir = std::env::temp_dir().join(format!("accel-ort-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("libonnxruntime.so.1.99.0");
    std::fs::write(&junk, b"this is not a shared library").unwrap();
    let err = accel_ort::load_one(&junk)
        .err()
        .expect("junk must not load");
    assert!(!err.is_empty());
    // A real shared library that is not ONNX Runtime.
    for libc in [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
    ] {
        if Path::new(libc).exists() {
            let err = accel_ort::load_one(Path::new(libc))
                .err()
                .expect("libc is not ONNX Runtime");
            assert!(!err.is_empty());
            eprintln!("libc: {err}");
            break;
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

//! accel-ort

//! accel-wgpu

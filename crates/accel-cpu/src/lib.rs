//! accel-cpu

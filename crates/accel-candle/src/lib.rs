//! accel-candle

//! accel-planner

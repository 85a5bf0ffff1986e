//! accel-planner: how accel measures an executable. The planner proper (candidate search,
//! plan cache) builds on these measurements; `accelbench bench` uses them directly.

pub mod measure;

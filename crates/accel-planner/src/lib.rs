//! accel-planner: benchmark-driven backend selection. Every candidate backend (with the
//! compile options worth trying) is compiled, checked against the reference backend on the
//! same random input and timed; the plan names the winner for an objective and keeps every
//! candidate's numbers or rejection reason. Plans are cached on disk by a key of everything
//! they depend on. `accelbench bench` uses the measurement pieces directly.

pub mod cache;
pub mod inputs;
pub mod measure;
pub mod plan;

pub use cache::{CacheStatus, Lookup, PlanCache, PlanKey, Planned, plan_cached, sha256_file};
pub use plan::{
    Candidate, CandidateReport, DEFAULT_BUDGET_MS, Objective, OnProgress, Plan, PlanConfig,
    Progress, Status, plan, tolerance, verify,
};

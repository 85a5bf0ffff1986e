//! Progress on stderr for what takes more than a second (planning, benchmarks, compare).
//! indicatif draws only when stderr is a terminal, so pipes, logs and tests see nothing and
//! stdout stays the command's output alone.

use accel_planner::{OnProgress, Progress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::Arc;
use std::time::Duration;

/// A bar of `len` steps on stderr (terminals only).
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// The planner's progress on a bar: a step per candidate checked, then the timing budget.
pub fn planning(bar: &ProgressBar) -> OnProgress {
    let bar = bar.clone();
    OnProgress(Arc::new(move |p: &Progress| match p {
        Progress::Checking { index, of, label } => {
            bar.set_length(*of as u64 + 1);
            bar.set_position(*index as u64);
            bar.set_message(format!("checking {label}"));
        }
        Progress::Timing { spent, budget } => {
            bar.set_position(bar.length().unwrap_or(1).saturating_sub(1));
            bar.set_message(format!(
                "timing ({:.1} of {:.1} s)",
                spent.as_secs_f64(),
                budget.as_secs_f64()
            ));
        }
    }))
}

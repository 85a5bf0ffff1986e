//! The planner: rejection of a backend that disagrees, the memory cap, the plan cache (its
//! key, corrupt and foreign files, concurrent writers) and `auto`'s fall-back when the
//! chosen backend dies. Test backends wrap the cpu backend: one perturbs an output, one can
//! be killed, one reports another device.

use accel::{Candidate, CompileOptions, PlanCache, PlanConfig, Session, Status};
use accel_core::{
    Backend, DeviceInfo, Executable, Graph, MemoryStats, Node, Result, Tensor, TensorView,
};
use accel_cpu::CpuBackend;
use accel_planner::{CacheStatus, Lookup, Objective, PlanKey, plan, plan_cached};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

fn crnn() -> (PathBuf, Graph) {
    let path = accel::shipped_model("crnn").expect("models/ is in the repository");
    let g = accel_core::load_optimized(&path).expect("the shipped CRNN loads");
    (path, g)
}

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("accel-planner-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A short budget: these tests check what the planner decides, not how fast anything is.
fn quick() -> PlanConfig {
    PlanConfig {
        budget: Duration::from_millis(150),
        ..PlanConfig::default()
    }
}

fn cpu(threads: usize) -> Candidate {
    Candidate::new(
        Arc::new(CpuBackend::new()),
        CompileOptions {
            threads: Some(threads),
            ..Default::default()
        },
    )
}

/// The cpu backend under another id, its executables changed by `wrap`.
struct Wrapped {
    id: String,
    device: String,
    wrap: Arc<dyn Fn(Vec<Tensor>) -> Result<Vec<Tensor>> + Send + Sync>,
}

impl Backend for Wrapped {
    fn id(&self) -> &str {
        &self.id
    }
    fn device(&self) -> DeviceInfo {
        DeviceInfo {
            name: self.device.clone(),
            kind: "cpu".into(),
            details: Vec::new(),
        }
    }
    fn supports(&self, _: &Node) -> bool {
        true
    }
    fn compile(&self, g: &Graph, o: &CompileOptions) -> Result<Box<dyn Executable>> {
        Ok(Box::new(WrappedExe {
            inner: CpuBackend::new().compile(g, o)?,
            wrap: self.wrap.clone(),
        }))
    }
}

struct WrappedExe {
    inner: Box<dyn Executable>,
    wrap: Arc<dyn Fn(Vec<Tensor>) -> Result<Vec<Tensor>> + Send + Sync>,
}

impl Executable for WrappedExe {
    fn run(&self, inputs: &[TensorView]) -> Result<Vec<Tensor>> {
        (self.wrap)(self.inner.run(inputs)?)
    }
    fn memory(&self) -> MemoryStats {
        self.inner.memory()
    }
}

fn wrapped(
    id: &str,
    wrap: impl Fn(Vec<Tensor>) -> Result<Vec<Tensor>> + Send + Sync + 'static,
) -> Arc<Wrapped> {
    Arc::new(Wrapped {
        id: id.into(),
        device: "wrapped cpu".into(),
        wrap: Arc::new(wrap),
    })
}

/// Adds `delta` to the first element of the first output.
fn perturbed(delta: f32) -> Arc<Wrapped> {
    wrapped("perturbed", move |mut out| {
        let first = &mut out[0];
        let mut v = first.to_f32_vec()?;
        v[0] += delta;
        *first = Tensor::from_vec(first.shape().to_vec(), v)?;
        Ok(out)
    })
}

/// Fails every run once `dead` is set, as a lost device would.
fn killable(id: &str, dead: Arc<AtomicBool>) -> Arc<Wrapped> {
    let name = id.to_string();
    wrapped(id, move |out| {
        if dead.load(Ordering::SeqCst) {
            Err(accel::Error::Other(format!(
                "{name}: device lost (test hook)"
            )))
        } else {
            Ok(out)
        }
    })
}

#[test]
fn a_backend_that_disagrees_is_rejected_with_the_measured_difference() {
    let (_, g) = crnn();
    let candidates = vec![
        cpu(1),
        Candidate::new(perturbed(0.05), CompileOptions::default()),
    ];
    let p = plan(&g, &CpuBackend::new(), &candidates, &quick()).unwrap();
    let bad = &p.candidates[1];
    assert_eq!(bad.status, Status::Rejected, "{bad:?}");
    let diff = bad.max_abs_diff.expect("measured");
    assert!((diff - 0.05).abs() < 1e-3, "measured {diff}");
    let reason = bad.reason.as_deref().unwrap();
    assert!(
        reason.contains(&format!("{diff:.2e}")) && reason.contains("tolerance"),
        "{reason}"
    );
    assert_eq!(p.candidates[0].status, Status::Ok);
    assert_eq!(p.winner.as_deref(), Some("cpu"));
    assert_eq!(p.ranking(), vec![0]);
    // A perturbation inside the f32 tolerance passes.
    let close = vec![Candidate::new(perturbed(2e-5), CompileOptions::default())];
    let p = plan(&g, &CpuBackend::new(), &close, &quick()).unwrap();
    assert_eq!(p.candidates[0].status, Status::Ok, "{:?}", p.candidates[0]);
}

#[test]
fn every_candidate_is_reported_and_the_winner_is_the_fastest_that_passed() {
    let (_, g) = crnn();
    let candidates = vec![
        cpu(1),
        cpu(2),
        Candidate::skipped(
            Arc::new(CpuBackend::new()),
            CompileOptions::default(),
            "not worth it",
        ),
        Candidate::new(
            wrapped("broken", |_| Err(accel::Error::Other("no device".into()))),
            CompileOptions::default(),
        ),
    ];
    let p = plan(&g, &CpuBackend::new(), &candidates, &quick()).unwrap();
    assert_eq!(p.candidates.len(), 4);
    for c in &p.candidates[..2] {
        assert_eq!(c.status, Status::Ok);
        assert!(c.runs >= 1 && c.p50_ms.unwrap() > 0.0 && c.init_ms.is_some());
        assert!(c.throughput_ips.unwrap() > 0.0 && c.max_abs_diff == Some(0.0));
    }
    assert_eq!(p.candidates[2].status, Status::Skipped);
    assert_eq!(p.candidates[2].reason.as_deref(), Some("not worth it"));
    assert_eq!(p.candidates[3].status, Status::Failed);
    assert!(
        p.candidates[3]
            .reason
            .as_deref()
            .unwrap()
            .contains("no device")
    );
    let best = if p.candidates[0].p50_ms < p.candidates[1].p50_ms {
        0
    } else {
        1
    };
    assert_eq!(p.winner_index, Some(best));
    // Under a memory cap nothing fits, and every candidate says so.
    let capped = PlanConfig {
        memory_cap: Some(1000),
        ..quick()
    };
    let p = plan(&g, &CpuBackend::new(), &candidates[..2], &capped).unwrap();
    assert_eq!(p.winner, None);
    for c in &p.candidates {
        assert_eq!(c.status, Status::Rejected);
        assert!(c.reason.as_deref().unwrap().contains("memory cap"), "{c:?}");
    }
}

/// A slow candidate (each run 0.5 s, more than its share of the budget) keeps its checked
/// run as its only sample and is reported cut short, while the fast one still gets enough
/// runs for a stable median. The budget of 1.2 s leaves timing about 0.65 s after the
/// checks: 0.33 s each, so the CRNN's 9 runs fit even at 36 ms a run.
#[test]
fn a_slow_candidate_does_not_starve_the_fast_ones() {
    let (_, g) = crnn();
    let slow = wrapped("slow", |out| {
        std::thread::sleep(Duration::from_millis(500));
        Ok(out)
    });
    let candidates = vec![Candidate::new(slow, CompileOptions::default()), cpu(1)];
    let config = PlanConfig {
        budget: Duration::from_millis(1200),
        ..PlanConfig::default()
    };
    let p = plan(&g, &CpuBackend::new(), &candidates, &config).unwrap();
    let (slow, fast) = (&p.candidates[0], &p.candidates[1]);
    assert_eq!(slow.status, Status::Ok);
    assert_eq!(slow.runs, 1, "{slow:?}");
    assert!(slow.cut_short);
    assert!(fast.runs >= 9, "{fast:?}");
    assert_eq!(p.winner_index, Some(1));
}

#[test]
fn the_cache_key_changes_with_everything_a_plan_depends_on() {
    let (path, g) = crnn();
    let sha = accel_planner::sha256_file(&path).unwrap();
    let reference = CpuBackend::new();
    let cands = vec![cpu(1), cpu(2)];
    let config = PlanConfig::default();
    let key = |sha: &str, cands: &[Candidate], config: &PlanConfig| {
        PlanKey::new(sha, &g, &reference, cands, config).digest()
    };
    let base = key(&sha, &cands, &config);
    assert_eq!(base, key(&sha, &cands, &config), "the key is deterministic");
    assert_eq!(base.len(), 64);
    let other_device = Candidate::new(
        Arc::new(Wrapped {
            id: "cpu".into(),
            device: "another CPU model".into(),
            wrap: Arc::new(Ok),
        }),
        CompileOptions {
            threads: Some(2),
            ..Default::default()
        },
    );
    let changed = [
        ("model content", key(&"0".repeat(64), &cands, &config)),
        (
            "batch (input shapes)",
            key(
                &sha,
                &cands,
                &PlanConfig {
                    batch: 4,
                    ..config.clone()
                },
            ),
        ),
        (
            "objective",
            key(
                &sha,
                &cands,
                &PlanConfig {
                    objective: Objective::Throughput,
                    ..config.clone()
                },
            ),
        ),
        (
            "memory cap",
            key(
                &sha,
                &cands,
                &PlanConfig {
                    memory_cap: Some(1 << 30),
                    ..config.clone()
                },
            ),
        ),
        ("candidate options", key(&sha, &[cpu(1), cpu(3)], &config)),
        ("candidate list", key(&sha, &[cpu(1)], &config)),
        ("device", key(&sha, &[cpu(1), other_device], &config)),
    ];
    for (what, k) in changed {
        assert_ne!(k, base, "changing the {what} must change the key");
    }
    // The time budget is how long to measure, not what is measured: same key.
    let longer = PlanConfig {
        budget: Duration::from_secs(9),
        ..config.clone()
    };
    assert_eq!(key(&sha, &cands, &longer), base);
}

#[test]
fn a_cached_plan_is_served_and_corrupt_or_foreign_files_are_replaced() {
    let (path, g) = crnn();
    let sha = accel_planner::sha256_file(&path).unwrap();
    let cache = PlanCache::new(tmp_dir("corrupt"));
    let reference = CpuBackend::new();
    let cands = vec![cpu(1)];
    let config = quick();
    let key = PlanKey::new(&sha, &g, &reference, &cands, &config);
    let file = cache.path(&key);
    let planned = || plan_cached(&g, Some(&sha), &reference, &cands, &config, Some(&cache));

    let first = planned().unwrap();
    assert_eq!(first.cache, CacheStatus::Miss);
    assert!(first.warnings.is_empty(), "{:?}", first.warnings);
    let second = planned().unwrap();
    assert_eq!(second.cache, CacheStatus::Hit);
    assert_eq!(second.plan, first.plan);

    let whole = std::fs::read(&file).unwrap();
    let foreign = String::from_utf8(whole.clone())
        .unwrap()
        .replacen(&sha, &"f".repeat(64), 1);
    let bad: [(&str, Vec<u8>); 4] = [
        ("garbage", b"\x00\xffnot json at all".to_vec()),
        ("truncated", whole[..whole.len() / 2].to_vec()),
        ("empty", Vec::new()),
        ("another key's plan", foreign.into_bytes()),
    ];
    for (what, bytes) in bad {
        std::fs::write(&file, &bytes).unwrap();
        assert!(
            matches!(cache.load(&key), Lookup::Unusable(_)),
            "{what} must not be a hit"
        );
        let again = planned().unwrap();
        assert_eq!(again.cache, CacheStatus::Miss, "{what}");
        assert!(
            again.warnings.iter().any(|w| w.contains("ignoring")),
            "{what}: {:?}",
            again.warnings
        );
        assert!(
            matches!(cache.load(&key), Lookup::Hit(_)),
            "{what}: the fresh plan replaces the file"
        );
    }
    // Unreadable: a directory where the file should be.
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir(&file).unwrap();
    let again = planned().unwrap();
    assert_eq!(again.cache, CacheStatus::Miss);
    assert!(
        again.warnings.iter().any(|w| w.contains("cannot save")),
        "{:?}",
        again.warnings
    );
}

#[test]
fn concurrent_writers_leave_one_whole_plan() {
    let (path, g) = crnn();
    let sha = accel_planner::sha256_file(&path).unwrap();
    let dir = tmp_dir("concurrent");
    let reference = CpuBackend::new();
    let cands = vec![cpu(1)];
    let config = quick();
    let key = PlanKey::new(&sha, &g, &reference, &cands, &config);
    let plan = plan(&g, &reference, &cands, &config).unwrap();
    let (writers, readers, rounds) = (6, 3, 40);
    let start = Barrier::new(writers + readers);
    std::thread::scope(|s| {
        for w in 0..writers {
            let (key, start, dir) = (&key, &start, &dir);
            let mut mine = plan.clone();
            mine.planning_ms = w as f64;
            s.spawn(move || {
                let cache = PlanCache::new(dir);
                start.wait();
                for _ in 0..rounds {
                    cache.store(key, &mine).unwrap();
                }
            });
        }
        for _ in 0..readers {
            let (key, start, dir) = (&key, &start, &dir);
            s.spawn(move || {
                let cache = PlanCache::new(dir);
                start.wait();
                for _ in 0..rounds * 4 {
                    match cache.load(key) {
                        Lookup::Hit(p) => assert!(p.planning_ms < writers as f64),
                        Lookup::Miss => {}
                        Lookup::Unusable(why) => panic!("a reader saw a partial file: {why}"),
                    }
                }
            });
        }
    });
    let Lookup::Hit(last) = PlanCache::new(&dir).load(&key) else {
        panic!("no whole plan left");
    };
    assert_eq!(last.candidates, plan.candidates);
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(files.len(), 1, "temporaries left behind: {files:?}");
}

#[test]
fn auto_falls_back_when_the_chosen_backend_dies() {
    let (path, g) = crnn();
    let (dead_a, dead_b) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let session = Session::builder()
        .backend("auto")
        .candidates(vec![
            Candidate::new(
                killable("killable-a", dead_a.clone()),
                CompileOptions::default(),
            ),
            Candidate::new(
                killable("killable-b", dead_b.clone()),
                CompileOptions::default(),
            ),
        ])
        .plan_config(quick())
        .plan_cache(None)
        .load(&path)
        .unwrap();
    assert_eq!(session.plan_cache_status(), Some(CacheStatus::Off));
    let plan = session.plan().expect("auto has a plan");
    assert_eq!(plan.ranking().len(), 2, "{plan:?}");
    let chosen = session.backend();
    assert_eq!(Some(&chosen), plan.winner.as_ref());

    let x = accel_planner::inputs::random_inputs(&g, 1).unwrap();
    let views: Vec<TensorView> = x.iter().map(|t| t.view()).collect();
    let want = CpuBackend::new()
        .compile(&g, &CompileOptions::default())
        .unwrap()
        .run(&views)
        .unwrap();
    assert_eq!(session.run(&views).unwrap(), want);
    assert!(session.fallbacks().is_empty());

    let (killed, other) = if chosen == "killable-a" {
        (&dead_a, "killable-b")
    } else {
        (&dead_b, "killable-a")
    };
    killed.store(true, Ordering::SeqCst);
    let got = session
        .run(&views)
        .expect("the session falls back and answers");
    assert_eq!(got, want);
    assert_eq!(session.backend(), other);
    let notes = session.fallbacks();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains(&chosen) && notes[0].contains("device lost") && notes[0].contains(other),
        "{notes:?}"
    );
    // It stays on the survivor.
    assert_eq!(session.run(&views).unwrap(), want);
    assert_eq!(session.fallbacks().len(), 1);

    // A request that does not fit the model is the caller's error, not a reason to move.
    let wrong = Tensor::from_vec(vec![1, 3], vec![0.5f32; 3]).unwrap();
    assert!(session.run(&[wrong.view()]).is_err());
    assert_eq!(session.backend(), other);

    // With every candidate dead, the caller gets an error naming them.
    dead_a.store(true, Ordering::SeqCst);
    dead_b.store(true, Ordering::SeqCst);
    let e = session.run(&views).unwrap_err().to_string();
    assert!(e.contains("every backend of the plan failed"), "{e}");
    assert!(e.contains("killable-a") && e.contains("killable-b"), "{e}");
}

#[test]
fn auto_with_no_passing_candidate_says_why() {
    let (path, _) = crnn();
    let e = Session::builder()
        .backend("auto")
        .candidates(vec![Candidate::new(
            perturbed(1.0),
            CompileOptions::default(),
        )])
        .plan_config(quick())
        .plan_cache(None)
        .load(&path)
        .err()
        .expect("nothing passed")
        .to_string();
    assert!(e.contains("no backend gave the right answer"), "{e}");
    assert!(e.contains("perturbed") && e.contains("max abs diff"), "{e}");
}

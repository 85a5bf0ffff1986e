//! The plan cache: one JSON file per key under `<cache dir>/plans/`, named by the key's
//! SHA-256 and holding the key itself beside the plan. The key is everything a plan depends
//! on: the model's content, the input shapes, the objective and batch, the memory cap, the
//! reference, every candidate with its options and its device as the backend describes it
//! (CPU model and ISA, GPU adapter and driver, ONNX Runtime version and library), and
//! accel's version. Any change re-plans. Files are written atomically, so concurrent
//! writers leave one whole plan; an unreadable or foreign file is a miss with a warning, and
//! the fresh plan replaces it.

use crate::plan::{Candidate, Objective, Plan, PlanConfig};
use accel_core::{Backend, Dim, Error, Graph, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// A candidate as the key sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CandidateKey {
    pub backend: String,
    pub device: String,
    pub kind: String,
    pub details: Vec<(String, String)>,
    pub threads: Option<usize>,
    pub precision: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanKey {
    pub accel_version: String,
    pub model_sha256: String,
    /// Each input's name and shape at the plan's batch.
    pub inputs: Vec<(String, Vec<String>)>,
    pub objective: Objective,
    pub batch: usize,
    pub memory_cap: Option<u64>,
    pub reference: CandidateKey,
    pub candidates: Vec<CandidateKey>,
}

fn candidate_key(backend: &dyn Backend, threads: Option<usize>, precision: String) -> CandidateKey {
    let d = backend.device();
    CandidateKey {
        backend: backend.id().to_string(),
        device: d.name,
        kind: d.kind,
        details: d.details,
        threads,
        precision,
    }
}

impl PlanKey {
    pub fn new(
        model_sha256: &str,
        graph: &Graph,
        reference: &dyn Backend,
        candidates: &[Candidate],
        config: &PlanConfig,
    ) -> PlanKey {
        let inputs = graph
            .inputs
            .iter()
            .map(|vi| {
                let dims = vi.shape.iter().flatten().enumerate().map(|(i, d)| match d {
                    Dim::Sym(_) if i == 0 => config.batch.to_string(),
                    Dim::Sym(s) => s.clone(),
                    Dim::Known(n) => n.to_string(),
                });
                (vi.name.clone(), dims.collect())
            })
            .collect();
        PlanKey {
            accel_version: env!("CARGO_PKG_VERSION").to_string(),
            model_sha256: model_sha256.to_string(),
            inputs,
            objective: config.objective,
            batch: config.batch,
            memory_cap: config.memory_cap,
            reference: candidate_key(reference, None, "f32".into()),
            candidates: candidates
                .iter()
                .map(|c| {
                    candidate_key(
                        &*c.backend,
                        c.options.threads,
                        c.options.precision.to_string(),
                    )
                })
                .collect(),
        }
    }

    /// The key's SHA-256 in hex: the cache file's name.
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).expect("a key is plain data");
        hex(&Sha256::digest(&json))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A file's SHA-256 in hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(hex(&Sha256::digest(&bytes)))
}

#[derive(Serialize, Deserialize)]
struct Entry {
    key: PlanKey,
    plan: Plan,
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    Hit(Plan),
    Miss,
    /// A file was there but is not a plan for this key; the reason says what was wrong.
    Unusable(String),
}

pub struct PlanCache {
    dir: PathBuf,
}

impl PlanCache {
    pub fn new(dir: impl Into<PathBuf>) -> PlanCache {
        PlanCache { dir: dir.into() }
    }

    /// `plans/` under accel's cache directory (`ACCEL_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/accel`, else `~/.cache/accel`).
    pub fn default_location() -> Option<PlanCache> {
        accel_core::cache::cache_dir().map(|d| PlanCache::new(d.join("plans")))
    }

    pub fn path(&self, key: &PlanKey) -> PathBuf {
        self.dir.join(format!("{}.json", key.digest()))
    }

    pub fn load(&self, key: &PlanKey) -> Lookup {
        let path = self.path(key);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Lookup::Miss,
            Err(e) => return Lookup::Unusable(format!("cannot read {}: {e}", path.display())),
        };
        match serde_json::from_slice::<Entry>(&bytes) {
            Ok(entry) if entry.key == *key => Lookup::Hit(entry.plan),
            Ok(_) => Lookup::Unusable(format!("{} holds a plan for another key", path.display())),
            Err(e) => Lookup::Unusable(format!("{} is not a plan: {e}", path.display())),
        }
    }

    pub fn store(&self, key: &PlanKey, plan: &Plan) -> Result<()> {
        let path = self.path(key);
        let entry = Entry {
            key: key.clone(),
            plan: plan.clone(),
        };
        let json = serde_json::to_vec_pretty(&entry)
            .map_err(|e| Error::Other(format!("cannot encode the plan: {e}")))?;
        accel_core::cache::write_atomic(&path, &json).map_err(|e| Error::io(&path, e))
    }
}

/// Whether a plan came from the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheStatus {
    Hit,
    Miss,
    /// No cache was used (none given, or no model hash to key it by).
    Off,
}

pub struct Planned {
    pub plan: Plan,
    pub cache: CacheStatus,
    /// Cache trouble that did not stop planning (an unusable file, a failed write).
    pub warnings: Vec<String>,
}

/// The cached plan for this key, else a fresh one, stored for next time.
pub fn plan_cached(
    graph: &Graph,
    model_sha256: Option<&str>,
    reference: &dyn Backend,
    candidates: &[Candidate],
    config: &PlanConfig,
    cache: Option<&PlanCache>,
) -> Result<Planned> {
    let mut warnings = Vec::new();
    let keyed = cache.zip(model_sha256).map(|(cache, sha)| {
        (
            cache,
            PlanKey::new(sha, graph, reference, candidates, config),
        )
    });
    if let Some((cache, key)) = &keyed {
        match cache.load(key) {
            Lookup::Hit(plan) => {
                return Ok(Planned {
                    plan,
                    cache: CacheStatus::Hit,
                    warnings,
                });
            }
            Lookup::Miss => {}
            Lookup::Unusable(why) => {
                warnings.push(format!("ignoring the plan cache file: {why}; re-planning"))
            }
        }
    }
    let plan = crate::plan::plan(graph, reference, candidates, config)?;
    if let Some((cache, key)) = &keyed
        && let Err(e) = cache.store(key, &plan)
    {
        warnings.push(format!("cannot save the plan: {e}"));
    }
    Ok(Planned {
        plan,
        cache: if keyed.is_some() {
            CacheStatus::Miss
        } else {
            CacheStatus::Off
        },
        warnings,
    })
}

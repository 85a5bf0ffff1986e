//! Session: a model loaded, optimized and compiled for one backend, or for `auto`: the
//! planner's winner, with the rest of its ranking to fall back on.

use crate::auto::default_candidates;
use crate::registry::available_backend;
use accel_core::ir::{Graph, ValueInfo};
use accel_core::{CompileOptions, Error, Executable, Result, Tensor, TensorView, passes};
use accel_planner::{CacheStatus, Candidate, Plan, PlanCache, PlanConfig, plan_cached};
use std::path::Path;
use std::sync::{Mutex, RwLock};

pub struct SessionBuilder {
    backend: String,
    options: CompileOptions,
    candidates: Option<Vec<Candidate>>,
    plan_config: PlanConfig,
    plan_cache: Option<PlanCache>,
    model_sha256: Option<String>,
}

impl SessionBuilder {
    /// Backend id ("cpu", "wgpu:0", "ort-openvino", ...), or "auto" for the planner's
    /// choice. Defaults to "cpu".
    pub fn backend(mut self, id: &str) -> Self {
        self.backend = id.to_string();
        self
    }

    pub fn threads(mut self, threads: usize) -> Self {
        self.options.threads = Some(threads);
        self
    }

    /// Compile options of a named backend (`auto` tries its candidates' own).
    pub fn options(mut self, options: CompileOptions) -> Self {
        self.options = options;
        self
    }

    /// What `auto` chooses among; default: every available backend with the options worth
    /// trying ([`crate::default_candidates`]).
    pub fn candidates(mut self, candidates: Vec<Candidate>) -> Self {
        self.candidates = Some(candidates);
        self
    }

    /// `auto`'s objective, batch, time budget and memory cap.
    pub fn plan_config(mut self, config: PlanConfig) -> Self {
        self.plan_config = config;
        self
    }

    /// Where `auto` keeps its plans; `None` plans afresh every time. Default: `plans/`
    /// under accel's cache directory.
    pub fn plan_cache(mut self, cache: Option<PlanCache>) -> Self {
        self.plan_cache = cache;
        self
    }

    /// The model's content hash (`accel_planner::sha256_file`), which keys `auto`'s plan
    /// cache for [`SessionBuilder::compile`]; [`SessionBuilder::load`] computes it.
    pub fn model_hash(mut self, sha256: String) -> Self {
        self.model_sha256 = Some(sha256);
        self
    }

    /// Loads an ONNX file, optimizes it and compiles it for the backend.
    pub fn load(mut self, path: impl AsRef<Path>) -> Result<Session> {
        let path = path.as_ref();
        let mut graph = accel_core::onnx::load_model(path)?;
        passes::optimize(&mut graph)?;
        // The plan cache is keyed by the file's content.
        if self.backend == "auto" {
            self.model_sha256 = Some(accel_planner::sha256_file(path)?);
        }
        self.compile(graph)
    }

    /// Compiles an already optimized graph (for `auto` without the plan cache unless
    /// [`SessionBuilder::model_hash`] was given: there is no file to key it by).
    pub fn compile(self, graph: Graph) -> Result<Session> {
        if self.backend != "auto" {
            let backend = available_backend(&self.backend)?;
            let exe = backend.compile(&graph, &self.options)?;
            return Ok(Session {
                inputs: graph.inputs.clone(),
                outputs: graph.outputs.clone(),
                active: RwLock::new(Active {
                    index: 0,
                    backend: backend.id().to_string(),
                    exe,
                }),
                auto: None,
            });
        }
        let candidates = self.candidates.unwrap_or_else(default_candidates);
        let reference = accel_cpu::CpuBackend::new();
        let planned = plan_cached(
            &graph,
            self.model_sha256.as_deref(),
            &reference,
            &candidates,
            &self.plan_config,
            self.plan_cache.as_ref(),
        )?;
        for w in &planned.warnings {
            eprintln!("accel: warning: {w}");
        }
        let plan = planned.plan;
        let order: Vec<Candidate> = plan
            .ranking()
            .into_iter()
            .filter_map(|i| candidates.get(i).cloned())
            .collect();
        let mut failures = Vec::new();
        for (index, c) in order.iter().enumerate() {
            match c.backend.compile(&graph, &c.options) {
                Ok(exe) => {
                    return Ok(Session {
                        inputs: graph.inputs.clone(),
                        outputs: graph.outputs.clone(),
                        active: RwLock::new(Active {
                            index,
                            backend: c.id().to_string(),
                            exe,
                        }),
                        auto: Some(Box::new(Auto {
                            graph,
                            order,
                            plan,
                            cache: planned.cache,
                            fallbacks: Mutex::new(Vec::new()),
                        })),
                    });
                }
                Err(e) => failures.push(format!("{}: {e}", c.label())),
            }
        }
        let rejected = plan
            .candidates
            .iter()
            .filter_map(|c| Some(format!("{}: {}", c.backend, c.reason.as_ref()?)));
        Err(Error::Other(format!(
            "auto: no backend gave the right answer ({})",
            rejected.chain(failures).collect::<Vec<_>>().join("; ")
        )))
    }
}

/// The executable runs are served from, and its place in the plan's ranking.
struct Active {
    index: usize,
    backend: String,
    exe: Box<dyn Executable>,
}

/// What `auto` keeps to fall back with.
struct Auto {
    graph: Graph,
    /// The candidates that passed, best first.
    order: Vec<Candidate>,
    plan: Plan,
    cache: CacheStatus,
    fallbacks: Mutex<Vec<String>>,
}

pub struct Session {
    inputs: Vec<ValueInfo>,
    outputs: Vec<ValueInfo>,
    active: RwLock<Active>,
    /// Boxed: most sessions are of a named backend.
    auto: Option<Box<Auto>>,
}

impl Session {
    pub fn builder() -> SessionBuilder {
        SessionBuilder {
            backend: "cpu".into(),
            options: CompileOptions::default(),
            candidates: None,
            plan_config: PlanConfig::default(),
            plan_cache: PlanCache::default_location(),
            model_sha256: None,
        }
    }

    /// The backend runs go to now (for `auto`, the plan's winner until it fails).
    pub fn backend(&self) -> String {
        self.read_active().backend.clone()
    }

    pub fn inputs(&self) -> &[ValueInfo] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[ValueInfo] {
        &self.outputs
    }

    /// `auto`'s plan: every candidate's numbers or rejection reason.
    pub fn plan(&self) -> Option<&Plan> {
        self.auto.as_ref().map(|a| &a.plan)
    }

    /// Whether `auto`'s plan came from the cache.
    pub fn plan_cache_status(&self) -> Option<CacheStatus> {
        self.auto.as_ref().map(|a| a.cache)
    }

    /// Each fall-back so far: which backend failed, why, and what took over.
    pub fn fallbacks(&self) -> Vec<String> {
        self.auto.as_ref().map_or_else(Vec::new, |a| {
            a.fallbacks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        })
    }

    /// Memory the compiled graph holds (weights, activation arena, scratch), where the
    /// backend reports it.
    pub fn memory(&self) -> accel_core::MemoryStats {
        self.read_active().exe.memory()
    }

    /// Runs the model; inputs in the order of [`Session::inputs`]. Under `auto`, a backend
    /// failure (device lost, provider error) moves the session to the next candidate of the
    /// plan, compiled then, which answers this request; each other candidate is tried once,
    /// and the error comes only when every one failed.
    pub fn run(&self, inputs: &[TensorView]) -> Result<Vec<Tensor>> {
        let Some(auto) = &self.auto else {
            return self.read_active().exe.run(inputs);
        };
        // A request that does not fit the model fails on every backend alike.
        passes::check_inputs(&self.inputs, inputs)?;
        let failed = {
            let active = self.read_active();
            match active.exe.run(inputs) {
                Ok(out) => return Ok(out),
                Err(e) => (active.index, e),
            }
        };
        self.fall_back(auto, failed, inputs)
    }

    fn fall_back(
        &self,
        auto: &Auto,
        (failed, error): (usize, Error),
        inputs: &[TensorView],
    ) -> Result<Vec<Tensor>> {
        let mut active = self.active.write().unwrap_or_else(|e| e.into_inner());
        let mut errors = vec![format!("{}: {error}", auto.order[failed].label())];
        // Another request may have moved on already: retry there first.
        if active.index > failed {
            match active.exe.run(inputs) {
                Ok(out) => return Ok(out),
                Err(e) => errors.push(format!("{}: {e}", auto.order[active.index].label())),
            }
        }
        // Then the rest of the ranking, the ones below first, those above (which failed
        // earlier, and may have recovered) after.
        let n = auto.order.len();
        let mut last = failed.max(active.index);
        let tried = [failed, active.index];
        let rest: Vec<usize> = (1..n)
            .map(|k| (last + k) % n)
            .filter(|i| !tried.contains(i))
            .collect();
        for next in rest {
            let c = &auto.order[next];
            let note = format!(
                "{} failed ({}); switching to {}",
                auto.order[last].label(),
                errors.last().map_or("", String::as_str),
                c.label()
            );
            eprintln!("accel: {note}");
            auto.fallbacks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(note);
            let answered = c
                .backend
                .compile(&auto.graph, &c.options)
                .and_then(|exe| exe.run(inputs).map(|out| (exe, out)));
            match answered {
                Ok((exe, out)) => {
                    *active = Active {
                        index: next,
                        backend: c.id().to_string(),
                        exe,
                    };
                    return Ok(out);
                }
                Err(e) => errors.push(format!("{}: {e}", c.label())),
            }
            last = next;
        }
        Err(Error::Other(format!(
            "every backend of the plan failed: {}",
            errors.join("; ")
        )))
    }

    /// Device times of the last run (GPU backends with timestamp queries), per node when
    /// compiled with `CompileOptions::profile`.
    pub fn last_kernel_profile(&self) -> Option<accel_core::KernelProfile> {
        self.read_active().exe.last_kernel_profile()
    }

    fn read_active(&self) -> std::sync::RwLockReadGuard<'_, Active> {
        self.active.read().unwrap_or_else(|e| e.into_inner())
    }
}

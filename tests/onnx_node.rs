//! The official ONNX node conformance cases (shipped in PyPI's `onnx` wheel under
//! `onnx/backend/test/data/node`), run on the CPU backend and, as a second and independent
//! implementation, on candle-cpu.
//!
//! A case is selected when every node of its model is an operator accel imports (the arms of
//! the `match op_type` in accel-core's `onnx/ops/mod.rs`, plus Constant). Each selected case is
//! loaded, optimized, compiled with `CpuBackend` and run on its `input_*.pb`; the outputs must
//! match `output_*.pb`: same dtype and shape, floats within 1e-4 + 1e-4 * |expected| (NaN
//! matches NaN), integers and bools exactly.
//!
//! `onnx_node_skips.txt` (CPU) and `onnx_node_skips_candle.txt` (candle) list the selected
//! cases a backend deliberately does not pass, each with its reason. A listed case that passes
//! fails the test (remove it from the list), and so does an unlisted case that fails, so the
//! lists stay honest. candle also inherits the CPU list (most entries are cases accel's
//! importer refuses, whatever the backend); an inherited case that candle passes is printed,
//! not failed. For candle, a case is also left out (and counted as such) when one of its
//! operators is one the backend says it does not support.
//!
//! The data directory is `$ACCEL_ONNX_NODE_DIR`, else the `onnx` package of the workspace's
//! `.venv` (created by the README's test set-up with `onnx==1.20.0`).

use accel_candle::CandleBackend;
use accel_core::onnx::proto::{ModelProto, TensorProto};
use accel_core::{Backend, CompileOptions, Graph, Tensor, TensorData, onnx, passes};
use accel_cpu::CpuBackend;
use accel_tests::{require, workspace_root};
use prost::Message;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Instant;

const ATOL: f32 = 1e-4;
const RTOL: f32 = 1e-4;

/// Operators of the two seed graphs: the selection must cover all of them.
const SEED_OPS: &[&str] = &[
    "Conv",
    "ConvTranspose",
    "MaxPool",
    "AveragePool",
    "BatchNormalization",
    "Relu",
    "Clip",
    "Sigmoid",
    "Softmax",
    "Add",
    "Mul",
    "MatMul",
    "Gemm",
    "LSTM",
    "Concat",
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
    "Shape",
    "Gather",
    "Slice",
    "Cast",
    "Identity",
    "Dropout",
    "Constant",
    "Pad",
    "Resize",
    "Expand",
    "ReduceProd",
    "Range",
];

const INSTALL_HINT: &str = "install the cases with `python3 -m venv .venv && .venv/bin/pip install onnx==1.20.0` \
     in the workspace root (scripts/setup.sh does it), or point ACCEL_ONNX_NODE_DIR at \
     <site-packages>/onnx/backend/test/data/node";

/// `$ACCEL_ONNX_NODE_DIR`, else `.venv/lib/python3*/site-packages/onnx/backend/test/data/node`.
fn find_node_dir() -> Result<PathBuf, String> {
    if let Some(d) = std::env::var_os("ACCEL_ONNX_NODE_DIR") {
        let d = PathBuf::from(d);
        return if d.is_dir() {
            Ok(d)
        } else {
            Err(format!(
                "ACCEL_ONNX_NODE_DIR={} is not a directory",
                d.display()
            ))
        };
    }
    let lib = workspace_root().join(".venv/lib");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&lib)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
                .map(|e| e.path().join("site-packages/onnx/backend/test/data/node"))
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().ok_or_else(|| {
        format!(
            "no ONNX node test data: ACCEL_ONNX_NODE_DIR is unset and {} has no python3*/site-packages/onnx/backend/test/data/node",
            lib.display()
        )
    })
}

/// The op types accel's importer accepts: the `match op_type` arms of onnx/ops/mod.rs.
fn supported_ops() -> BTreeSet<String> {
    let path = workspace_root().join("crates/accel-core/src/onnx/ops/mod.rs");
    let src = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let start = src
        .find("let op = match op_type {")
        .expect("onnx/ops/mod.rs has `let op = match op_type {`");
    let end = start
        + src[start..]
            .find("_ => return Err(unsupported")
            .expect("the op_type match ends with `_ => return Err(unsupported`");
    let mut ops: BTreeSet<String> = src[start..end]
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    ops.insert("Constant".into());
    let missing: Vec<_> = SEED_OPS.iter().filter(|o| !ops.contains(**o)).collect();
    assert!(
        missing.is_empty(),
        "parsing the op list of {} found {ops:?}, without the seed ops {missing:?}",
        path.display()
    );
    ops
}

/// `case  # reason` lines; blank lines and lines starting with '#' are comments.
fn read_skips(file: &str) -> BTreeMap<String, String> {
    let path = workspace_root().join("tests").join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut skips = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, reason) = line.split_once('#').unwrap_or((line, ""));
        let (name, reason) = (name.trim(), reason.trim());
        assert!(
            !name.contains(char::is_whitespace) && !reason.is_empty(),
            "{}:{}: expected `case_name  # reason`, got {line:?}",
            path.display(),
            i + 1
        );
        let dup = skips.insert(name.to_string(), reason.to_string());
        assert!(
            dup.is_none(),
            "{}:{}: {name} is listed twice",
            path.display(),
            i + 1
        );
    }
    skips
}

fn decode_model(path: &Path) -> Result<ModelProto, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    ModelProto::decode(bytes.as_slice()).map_err(|e| format!("{}: {e}", path.display()))
}

/// Whether every node of the model is an operator accel imports (default domain only).
fn unsupported_ops(model: &ModelProto, ops: &BTreeSet<String>) -> Vec<String> {
    let nodes = model
        .graph
        .as_ref()
        .map(|g| g.node.as_slice())
        .unwrap_or(&[]);
    let mut out: Vec<String> = nodes
        .iter()
        .filter(|n| {
            !(n.domain().is_empty() || n.domain() == "ai.onnx") || !ops.contains(n.op_type())
        })
        .map(|n| {
            if n.domain().is_empty() {
                n.op_type().to_string()
            } else {
                format!("{}:{}", n.domain(), n.op_type())
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `prefix_0.pb`, `prefix_1.pb`, ... in index order.
fn read_tensors(dir: &Path, prefix: &str) -> Result<Vec<(String, Tensor)>, String> {
    let mut out = Vec::new();
    for i in 0.. {
        let path = dir.join(format!("{prefix}_{i}.pb"));
        if !path.exists() {
            break;
        }
        let bytes =
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let proto = TensorProto::decode(bytes.as_slice())
            .map_err(|e| format!("{} is not a TensorProto: {e}", path.display()))?;
        let t = onnx::tensor_from_proto(&proto, Some(dir))
            .map_err(|e| format!("{prefix}_{i}.pb: {e}"))?;
        out.push((proto.name().to_string(), t));
    }
    Ok(out)
}

struct Case {
    model_path: PathBuf,
    /// Graph input and output names as the model lists them (the .pb files follow this order).
    input_names: Vec<String>,
    output_names: Vec<String>,
}

/// Loads, optionally optimizes, compiles and runs the case on one data set; compares outputs.
fn run_case(case: &Case, data: &Path, optimize: bool, backend: &dyn Backend) -> Result<(), String> {
    let mut graph = onnx::load_model(&case.model_path).map_err(|e| format!("load: {e}"))?;
    if optimize {
        passes::optimize(&mut graph).map_err(|e| format!("optimize: {e}"))?;
    }
    let inputs = read_tensors(data, "input")?;
    let expected = read_tensors(data, "output")?;
    let feed = order_inputs(case, &graph, inputs)?;
    let exe = backend
        .compile(&graph, &CompileOptions::default())
        .map_err(|e| format!("compile: {e}"))?;
    let views: Vec<_> = feed.iter().map(Tensor::view).collect();
    // The first run allocates and plans memory; the second runs on the plan (see
    // accel-cpu's executor), which writes outputs through other code paths.
    for run in ["first run", "planned run"] {
        let got = exe.run(&views).map_err(|e| format!("{run}: {e}"))?;
        if got.len() != graph.outputs.len() || expected.len() != case.output_names.len() {
            return Err(format!(
                "{run}: {} outputs computed, {} expected for {} graph outputs",
                got.len(),
                expected.len(),
                case.output_names.len()
            ));
        }
        let mut errors = Vec::new();
        for ((name, want), have) in case
            .output_names
            .iter()
            .zip(&expected)
            .map(|(n, e)| (n, &e.1))
            .zip(&got)
        {
            if let Err(e) = compare(want, have) {
                errors.push(format!("{run}: output '{name}': {e}"));
            }
        }
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
    }
    Ok(())
}

/// The `input_i.pb` tensors belong to the model's i-th graph input; accel's graph lists the
/// inputs that are not initializers, in the same relative order.
fn order_inputs(
    case: &Case,
    graph: &Graph,
    inputs: Vec<(String, Tensor)>,
) -> Result<Vec<Tensor>, String> {
    if inputs.len() > case.input_names.len() {
        return Err(format!(
            "{} input files for {} graph inputs",
            inputs.len(),
            case.input_names.len()
        ));
    }
    let mut by_name: HashMap<&str, Tensor> = case
        .input_names
        .iter()
        .map(String::as_str)
        .zip(inputs.into_iter().map(|(_, t)| t))
        .collect();
    graph
        .inputs
        .iter()
        .map(|vi| {
            by_name
                .remove(vi.name.as_str())
                .ok_or_else(|| format!("no input file for graph input '{}'", vi.name))
        })
        .collect()
}

fn compare(want: &Tensor, have: &Tensor) -> Result<(), String> {
    if want.dtype() != have.dtype() {
        return Err(format!(
            "dtype {} expected, got {}",
            want.dtype(),
            have.dtype()
        ));
    }
    if want.shape() != have.shape() {
        return Err(format!(
            "shape {:?} expected, got {:?}",
            want.shape(),
            have.shape()
        ));
    }
    if !want.dtype().is_float() {
        return exact(want.data(), have.data());
    }
    let (w, h) = (
        want.to_f32_vec().map_err(|e| e.to_string())?,
        have.to_f32_vec().map_err(|e| e.to_string())?,
    );
    let bad: Vec<usize> = (0..w.len()).filter(|&i| !close(w[i], h[i])).collect();
    match bad.first() {
        None => Ok(()),
        Some(&i) => Err(format!(
            "{} of {} values differ by more than {ATOL} + {RTOL}*|expected|; first at flat index {i}: expected {}, got {}",
            bad.len(),
            w.len(),
            w[i],
            h[i]
        )),
    }
}

fn close(want: f32, have: f32) -> bool {
    if want.is_nan() || have.is_nan() {
        return want.is_nan() && have.is_nan();
    }
    if want.is_infinite() || have.is_infinite() {
        return want == have;
    }
    (want - have).abs() <= ATOL + RTOL * want.abs()
}

fn exact(want: &TensorData, have: &TensorData) -> Result<(), String> {
    fn first_diff<T: PartialEq + std::fmt::Debug>(w: &[T], h: &[T]) -> Result<(), String> {
        match w.iter().zip(h).position(|(a, b)| a != b) {
            None => Ok(()),
            Some(i) => Err(format!(
                "{} of {} values differ; first at flat index {i}: expected {:?}, got {:?}",
                w.iter().zip(h).filter(|(a, b)| a != b).count(),
                w.len(),
                w[i],
                h[i]
            )),
        }
    }
    match (want, have) {
        (TensorData::I64(w), TensorData::I64(h)) => first_diff(w, h),
        (TensorData::I32(w), TensorData::I32(h)) => first_diff(w, h),
        (TensorData::U8(w), TensorData::U8(h)) => first_diff(w, h),
        (TensorData::Bool(w), TensorData::Bool(h)) => first_diff(w, h),
        _ => Err(format!(
            "cannot compare {} with {}",
            want.dtype(),
            have.dtype()
        )),
    }
}

/// Every `test_data_set_*` folder of the case.
fn data_sets(dir: &Path) -> Vec<PathBuf> {
    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.is_dir()
                        && p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_"))
                })
                .collect()
        })
        .unwrap_or_default();
    sets.sort();
    sets
}

/// Runs a case with panics caught, so a panic is reported against the case.
fn guarded(case: &Case, data: &Path, optimize: bool, backend: &dyn Backend) -> Result<(), String> {
    catch_unwind(AssertUnwindSafe(|| run_case(case, data, optimize, backend))).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "non-string panic payload".into());
        Err(format!("PANICKED: {msg}"))
    })
}

/// The case's verdict: `Ok` when every data set passes on the optimized graph. A failure says
/// whether the unoptimized graph passes, which points at a graph pass.
fn check_case(dir: &Path, model: &ModelProto, backend: &dyn Backend) -> Result<(), String> {
    let g = model.graph.as_ref().ok_or("the model has no graph")?;
    let case = Case {
        model_path: dir.join("model.onnx"),
        input_names: g.input.iter().map(|v| v.name().to_string()).collect(),
        output_names: g.output.iter().map(|v| v.name().to_string()).collect(),
    };
    let sets = data_sets(dir);
    if sets.is_empty() {
        return Err("no test_data_set_* folder".into());
    }
    for set in &sets {
        if let Err(e) = guarded(&case, set, true, backend) {
            let set_name = set.file_name().unwrap_or_default().to_string_lossy();
            let plain = match guarded(&case, set, false, backend) {
                Ok(()) => "the UNOPTIMIZED graph passes: a graph pass breaks it".to_string(),
                Err(e2) if e2 == e => "the unoptimized graph fails the same way".to_string(),
                Err(e2) => format!("the unoptimized graph fails too: {e2}"),
            };
            return Err(format!("{set_name}: {e} ({plain})"));
        }
    }
    Ok(())
}

#[test]
fn onnx_node_conformance() {
    conformance(&CpuBackend::new(), "onnx_node_skips.txt", None);
}

#[test]
fn onnx_node_conformance_on_candle() {
    conformance(
        &CandleBackend::cpu(),
        "onnx_node_skips_candle.txt",
        Some("onnx_node_skips.txt"),
    );
}

/// The operators of the case's model that `backend` does not run (none for the CPU backend,
/// which runs everything accel imports).
fn refused_ops(dir: &Path, backend: &dyn Backend) -> Vec<String> {
    let Ok(g) = onnx::load_model(dir.join("model.onnx")) else {
        return vec![];
    };
    let mut ops: Vec<String> = g
        .nodes
        .iter()
        .filter(|n| !backend.supports(n))
        .map(|n| n.op.name().to_string())
        .collect();
    ops.sort();
    ops.dedup();
    ops
}

/// Runs every selected case on `backend`; `skips_file` lists its own expected failures and
/// `inherited` another backend's, which it may pass.
fn conformance(backend: &dyn Backend, skips_file: &str, inherited: Option<&str>) {
    let id = backend.id().to_string();
    let dir = match find_node_dir() {
        Ok(d) => d,
        Err(reason) => {
            // Fails in CI, prints "SKIPPED ..." elsewhere.
            require(
                false,
                &format!("onnx node conformance on {id}"),
                &format!("{reason}; {INSTALL_HINT}"),
            );
            return;
        }
    };
    let ops = supported_ops();
    let skips = read_skips(skips_file);
    let inherited_skips = inherited.map(read_skips).unwrap_or_default();
    let mut passes_inherited: Vec<String> = Vec::new();
    let started = Instant::now();

    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("model.onnx").is_file())
        .collect();
    cases.sort();
    assert!(
        !cases.is_empty(),
        "{} holds no case folders with a model.onnx",
        dir.display()
    );

    let mut left_out: Vec<(String, Vec<String>)> = Vec::new();
    let mut selected_ops: BTreeSet<String> = BTreeSet::new();
    let mut passed = Vec::new();
    let mut skipped: Vec<(String, String)> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut now_passing: Vec<String> = Vec::new();
    let mut selected: BTreeSet<String> = BTreeSet::new();

    for case_dir in &cases {
        let name = case_dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let model = match decode_model(&case_dir.join("model.onnx")) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!("{name}: cannot decode model.onnx: {e}"));
                continue;
            }
        };
        let missing = unsupported_ops(&model, &ops);
        if !missing.is_empty() {
            left_out.push((name, missing));
            continue;
        }
        let refused = refused_ops(case_dir, backend);
        if !refused.is_empty() {
            left_out.push((
                name,
                refused.iter().map(|o| format!("{o} on {id}")).collect(),
            ));
            continue;
        }
        selected.insert(name.clone());
        if let Some(g) = &model.graph {
            selected_ops.extend(g.node.iter().map(|n| n.op_type().to_string()));
        }
        let verdict = check_case(case_dir, &model, backend);
        match (verdict, skips.get(&name), inherited_skips.get(&name)) {
            (Ok(()), None, None) => passed.push(name),
            (Ok(()), None, Some(_)) => {
                passes_inherited.push(name.clone());
                passed.push(name);
            }
            (Ok(()), Some(_), _) => now_passing.push(name),
            (Err(_), Some(reason), _) | (Err(_), None, Some(reason)) => {
                skipped.push((name, reason.clone()))
            }
            (Err(e), None, None) => failures.push(format!("{name}: {e}")),
        }
    }

    let stale: Vec<&String> = skips.keys().filter(|k| !selected.contains(*k)).collect();
    let uncovered: Vec<&&str> = SEED_OPS
        .iter()
        .filter(|o| !selected_ops.contains(**o))
        .collect();

    eprintln!(
        "onnx node conformance on {id} ({}): {} cases, {} selected, {} passed, {} skipped, {} failed, in {:.1} s",
        dir.display(),
        cases.len(),
        selected.len(),
        passed.len(),
        skipped.len(),
        failures.len() + now_passing.len(),
        started.elapsed().as_secs_f64()
    );
    eprintln!(
        "left out on {id} (an operator accel does not import, or {id} does not run): {} cases, e.g. {}",
        left_out.len(),
        left_out
            .iter()
            .step_by((left_out.len() / 8).max(1))
            .take(8)
            .map(|(n, m)| format!("{n} ({})", m.join(", ")))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(other) = inherited {
        eprintln!(
            "passed on {id} though tests/{other} skips them: {}",
            passes_inherited.join(", ")
        );
    }
    eprintln!(
        "skipped on {id} ({}, see tests/{skips_file}):",
        skipped.len()
    );
    for (name, reason) in &skipped {
        eprintln!("  {name}  # {reason}");
    }

    let mut problems = Vec::new();
    if !failures.is_empty() {
        problems.push(format!(
            "{} case(s) failed on {id} (fix accel, or list them in tests/{skips_file} with the reason):\n  {}",
            failures.len(),
            failures.join("\n  ")
        ));
    }
    if !now_passing.is_empty() {
        problems.push(format!(
            "{} listed case(s) now pass on {id}; remove them from the skip list tests/{skips_file}:\n  {}",
            now_passing.len(),
            now_passing.join("\n  ")
        ));
    }
    if !stale.is_empty() {
        problems.push(format!(
            "tests/{skips_file} names case(s) that are not selected (unknown, or an operator accel does not import or {id} does not run); remove them: {stale:?}"
        ));
    }
    if !uncovered.is_empty() {
        problems.push(format!(
            "no case selected for {id} exercises the seed operator(s) {uncovered:?}"
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

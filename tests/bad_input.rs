//! Bad input gets a typed error, never a panic or a silent wrong answer.

use accel_core::onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorShapeProto,
    TypeProto, ValueInfoProto,
    tensor_shape_proto::{Dimension, dimension},
    type_proto,
};
use accel_core::onnx::{parse_model, tensor_to_proto};
use accel_core::{Backend, CompileOptions, DType, Error, Tensor, passes};
use accel_cpu::CpuBackend;
use accel_tests::{model_path, random_f32, require};
use prost::Message;

fn value_info(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Some(v) => dimension::Value::DimValue(*v),
                None => dimension::Value::DimParam("N".into()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(1),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A small valid model: x[N,3,8,8] -> Conv(4, 3x3, pad 1) -> `act` -> y.
fn model_bytes(act: &str) -> Vec<u8> {
    let ints = |name: &str, v: &[i64]| AttributeProto {
        name: Some(name.into()),
        r#type: Some(7),
        ints: v.to_vec(),
        ..Default::default()
    };
    let w = random_f32(&[4, 3, 3, 3], -1.0, 1.0);
    let model = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(GraphProto {
            name: Some("tiny".into()),
            node: vec![
                NodeProto {
                    name: Some("conv".into()),
                    op_type: Some("Conv".into()),
                    input: vec!["x".into(), "w".into()],
                    output: vec!["c".into()],
                    attribute: vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1])],
                    ..Default::default()
                },
                NodeProto {
                    name: Some("act".into()),
                    op_type: Some(act.into()),
                    input: vec!["c".into()],
                    output: vec!["y".into()],
                    ..Default::default()
                },
            ],
            initializer: vec![tensor_to_proto("w", &w)],
            input: vec![value_info("x", &[None, Some(3), Some(8), Some(8)])],
            output: vec![value_info("y", &[None, Some(4), Some(8), Some(8)])],
            ..Default::default()
        }),
        ..Default::default()
    };
    model.encode_to_vec()
}

fn compile(bytes: &[u8]) -> accel_core::Result<Box<dyn accel_core::Executable>> {
    let mut g = parse_model(bytes, None)?;
    passes::optimize(&mut g)?;
    CpuBackend::new().compile(&g, &CompileOptions::default())
}

#[test]
fn every_truncation_of_a_model_is_an_error() {
    let bytes = model_bytes("Relu");
    compile(&bytes).expect("the whole model loads");
    for cut in 0..bytes.len() {
        match parse_model(&bytes[..cut], None) {
            Err(Error::InvalidModel(msg)) => assert!(!msg.is_empty()),
            other => panic!("prefix of {cut}/{} bytes gave {other:?}", bytes.len()),
        }
    }
}

#[test]
fn random_bytes_are_an_error() {
    let mut seed = 0x9e3779b97f4a7c15u64 ^ std::process::id() as u64;
    for len in [1usize, 7, 64, 1000, 50_000] {
        let junk: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        assert!(
            parse_model(&junk, None).is_err(),
            "{len} random bytes parsed as a model"
        );
    }
    assert!(matches!(
        parse_model(b"", None),
        Err(Error::InvalidModel(_))
    ));
}

#[test]
fn unknown_op_names_op_node_and_opset() {
    let err = compile(&model_bytes("FancyActivation"))
        .err()
        .expect("unknown op must fail");
    match &err {
        Error::UnsupportedOp {
            op_type,
            node,
            opset,
            ..
        } => {
            assert_eq!(
                (op_type.as_str(), node.as_str(), *opset),
                ("FancyActivation", "act", 17)
            );
        }
        other => panic!("expected UnsupportedOp, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("FancyActivation") && msg.contains("'act'") && msg.contains("17"),
        "{msg}"
    );
}

#[test]
fn wrong_shape_and_dtype_are_typed_errors() {
    let exe = compile(&model_bytes("Relu")).unwrap();
    let bad_shape = random_f32(&[1, 3, 9, 8], 0.0, 1.0);
    assert!(matches!(
        exe.run(&[bad_shape.view()]),
        Err(Error::ShapeMismatch { .. })
    ));
    let bad_rank = random_f32(&[3, 8, 8], 0.0, 1.0);
    assert!(matches!(
        exe.run(&[bad_rank.view()]),
        Err(Error::ShapeMismatch { .. })
    ));
    let ints = Tensor::from_vec(vec![1, 3, 8, 8], vec![1i64; 192]).unwrap();
    match exe.run(&[ints.view()]) {
        Err(Error::DTypeMismatch {
            expected: DType::F32,
            actual: DType::I64,
            ..
        }) => {}
        other => panic!("expected a dtype error, got {other:?}"),
    }
    assert!(matches!(
        exe.run(&[]),
        Err(Error::InputCount {
            expected: 1,
            actual: 0,
            ..
        })
    ));
    // The symbolic batch accepts any size.
    let ok = random_f32(&[3, 3, 8, 8], 0.0, 1.0);
    assert_eq!(exe.run(&[ok.view()]).unwrap()[0].shape(), &[3, 4, 8, 8]);
}

#[test]
fn nan_input_propagates_without_panic() {
    let exe = compile(&model_bytes("Sigmoid")).unwrap();
    let nan = Tensor::from_vec(vec![1, 3, 8, 8], vec![f32::NAN; 192]).unwrap();
    let out = exe.run(&[nan.view()]).unwrap().remove(0);
    assert!(out.as_slice::<f32>().unwrap().iter().all(|v| v.is_nan()));
}

#[test]
fn shipped_models_reject_truncation_and_propagate_nan() {
    let path = model_path("crnn.onnx");
    if !require(
        path.exists(),
        "shipped-model bad input",
        "models/crnn.onnx is missing",
    ) {
        return;
    }
    let bytes = std::fs::read(&path).unwrap();
    for frac in [0.0, 0.1, 0.5, 0.9, 0.999] {
        let cut = (bytes.len() as f64 * frac) as usize;
        assert!(
            parse_model(&bytes[..cut], None).is_err(),
            "crnn.onnx cut at {cut} bytes loaded"
        );
    }
    let mut g = parse_model(&bytes, None).unwrap();
    passes::optimize(&mut g).unwrap();
    let exe = CpuBackend::new()
        .compile(&g, &CompileOptions::default())
        .unwrap();
    let shape: Vec<usize> = g.inputs[0]
        .shape
        .as_ref()
        .unwrap()
        .iter()
        .map(|d| d.known().unwrap_or(1))
        .collect();
    let n = shape.iter().product();
    let nan = Tensor::from_vec(shape, vec![f32::NAN; n]).unwrap();
    let out = exe.run(&[nan.view()]).unwrap().remove(0);
    assert!(
        out.as_slice::<f32>().unwrap().iter().any(|v| v.is_nan()),
        "NaN input vanished"
    );
}

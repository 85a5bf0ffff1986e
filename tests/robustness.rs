//! Adversarial models: odd attributes, mismatched weights, huge shape values and empty
//! tensors get a typed error (or a correct answer), never a panic or an absurd allocation.

use accel_core::onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
    tensor_shape_proto::{Dimension, dimension},
    type_proto,
};
use accel_core::onnx::{parse_model, tensor_to_proto};
use accel_core::{Backend, CompileOptions, Executable, Result, Tensor, passes};
use accel_cpu::CpuBackend;
use accel_tests::{model_path, require, workspace_root};
use prost::Message;

const F32: i32 = 1;
const I64: i32 = 7;

/// A graph input or output. `dims`: `None` for an unknown rank; a negative entry is a symbol.
fn vi(name: &str, elem: i32, dims: Option<&[i64]>) -> ValueInfoProto {
    let shape = dims.map(|dims| TensorShapeProto {
        dim: dims
            .iter()
            .enumerate()
            .map(|(i, &d)| Dimension {
                value: Some(if d >= 0 {
                    dimension::Value::DimValue(d)
                } else {
                    dimension::Value::DimParam(format!("{name}_{i}"))
                }),
                ..Default::default()
            })
            .collect(),
    });
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem),
                shape,
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(7),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(2),
        i: Some(v),
        ..Default::default()
    }
}

fn string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(3),
        s: Some(v.as_bytes().to_vec()),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        name: Some(format!("{op}_node")),
        op_type: Some(op.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

fn init_f32(name: &str, shape: &[usize]) -> TensorProto {
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|i| (i % 7) as f32 * 0.25 - 0.5).collect();
    tensor_to_proto(name, &Tensor::from_vec(shape.to_vec(), v).unwrap())
}

fn init_i64(name: &str, v: &[i64]) -> TensorProto {
    tensor_to_proto(name, &Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap())
}

fn model(
    opset: i64,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
) -> Vec<u8> {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        graph: Some(GraphProto {
            name: Some("robustness".into()),
            node: nodes,
            initializer: inits,
            input: inputs,
            output: outputs,
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// One node reading `x` (f32, `dims`) and the initializers, writing `y`.
fn one_node(n: NodeProto, inits: Vec<TensorProto>, x_dims: Option<&[i64]>) -> Vec<u8> {
    model(
        17,
        vec![n],
        inits,
        vec![vi("x", F32, x_dims)],
        vec![vi("y", F32, None)],
    )
}

fn compile(bytes: &[u8]) -> Result<Box<dyn Executable>> {
    let mut g = parse_model(bytes, None)?;
    passes::optimize(&mut g)?;
    CpuBackend::new().compile(&g, &CompileOptions::default())
}

fn run(bytes: &[u8], feeds: &[Tensor]) -> Result<Vec<Tensor>> {
    let exe = compile(bytes)?;
    let views: Vec<_> = feeds.iter().map(|t| t.view()).collect();
    exe.run(&views)
}

fn ones(shape: &[usize]) -> Tensor {
    Tensor::from_vec(shape.to_vec(), vec![1.0f32; shape.iter().product()]).unwrap()
}

fn assert_err<T>(r: Result<T>, what: &str) -> String {
    match r {
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.is_empty(), "{what}: empty error message");
            msg
        }
        Ok(_) => panic!("{what}: expected an error, got a result"),
    }
}

fn conv(inputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
    node("Conv", inputs, &["y"], attrs)
}

// ---- Conv / ConvTranspose / pools -------------------------------------------------------

#[test]
fn conv_weights_of_too_low_rank_are_errors() {
    for shape in [&[][..], &[4], &[4, 3]] {
        let m = one_node(
            conv(&["x", "w"], vec![]),
            vec![init_f32("w", shape)],
            Some(&[1, 3, 8, 8]),
        );
        assert_err(compile(&m), &format!("Conv weight {shape:?}"));
        let m = one_node(
            node("ConvTranspose", &["x", "w"], &["y"], vec![]),
            vec![init_f32("w", shape)],
            Some(&[1, 3, 8, 8]),
        );
        assert_err(compile(&m), &format!("ConvTranspose weight {shape:?}"));
    }
}

#[test]
fn conv_kernel_shape_must_match_the_weights() {
    let m = one_node(
        conv(&["x", "w"], vec![ints("kernel_shape", &[5, 5])]),
        vec![init_f32("w", &[4, 3, 3, 3])],
        Some(&[1, 3, 8, 8]),
    );
    let msg = assert_err(compile(&m), "kernel_shape 5x5 with 3x3 weights");
    assert!(msg.contains("kernel_shape"), "{msg}");
    // Same with the input shape unknown until run time.
    let m = one_node(
        conv(&["x", "w"], vec![ints("kernel_shape", &[5, 5])]),
        vec![init_f32("w", &[4, 3, 3, 3])],
        None,
    );
    assert_err(run(&m, &[ones(&[1, 3, 8, 8])]), "kernel_shape at run time");
}

#[test]
fn conv_weight_rank_must_match_the_input_rank() {
    // 2-D weights, 1-D input, rank unknown until run time: must not run as a 1 x kw kernel.
    let m = one_node(
        conv(&["x", "w"], vec![]),
        vec![init_f32("w", &[4, 3, 3, 3])],
        None,
    );
    assert_err(run(&m, &[ones(&[1, 3, 8])]), "2-D weights on a 1-D input");
    let m = one_node(
        node("ConvTranspose", &["x", "w"], &["y"], vec![]),
        vec![init_f32("w", &[3, 4, 3, 3])],
        None,
    );
    assert_err(
        run(&m, &[ones(&[1, 3, 8])]),
        "2-D ConvTranspose on 1-D input",
    );
    // 1-D weights, 2-D input.
    let m = one_node(
        conv(&["x", "w"], vec![]),
        vec![init_f32("w", &[4, 3, 3])],
        None,
    );
    assert_err(
        run(&m, &[ones(&[1, 3, 8, 8])]),
        "1-D weights on a 2-D input",
    );
}

#[test]
fn window_attributes_of_the_wrong_length_are_errors() {
    let cases: Vec<(&str, Vec<AttributeProto>)> = vec![
        ("strides", vec![ints("strides", &[1, 1, 1])]),
        ("dilations", vec![ints("dilations", &[1])]),
        ("pads", vec![ints("pads", &[1, 1])]),
    ];
    for (what, attrs) in cases {
        for dims in [Some(&[1i64, 3, 8, 8][..]), None] {
            let m = one_node(
                conv(&["x", "w"], attrs.clone()),
                vec![init_f32("w", &[4, 3, 3, 3])],
                dims,
            );
            assert_err(run(&m, &[ones(&[1, 3, 8, 8])]), what);
        }
    }
    // 2-D window attributes on a 1-D pool, input rank known only at run time.
    for attrs in [
        vec![ints("kernel_shape", &[2, 2])],
        vec![ints("kernel_shape", &[2]), ints("strides", &[2, 2])],
        vec![ints("kernel_shape", &[2]), ints("pads", &[1, 1, 1, 1])],
        vec![ints("kernel_shape", &[2]), ints("dilations", &[1, 1])],
    ] {
        let m = one_node(node("MaxPool", &["x"], &["y"], attrs.clone()), vec![], None);
        assert_err(run(&m, &[ones(&[1, 2, 8])]), &format!("MaxPool {attrs:?}"));
    }
    // And 2-D pads on a 1-D conv.
    let m = one_node(
        conv(&["x", "w"], vec![ints("pads", &[1, 1, 1, 1])]),
        vec![init_f32("w", &[4, 3, 3])],
        None,
    );
    assert_err(run(&m, &[ones(&[1, 3, 8])]), "2-D pads on a 1-D conv");
}

#[test]
fn zero_negative_and_huge_window_values_are_errors() {
    let big = 1i64 << 62;
    let cases: Vec<Vec<AttributeProto>> = vec![
        vec![ints("strides", &[0, 1])],
        vec![ints("dilations", &[1, 0])],
        vec![ints("strides", &[-1, 1])],
        vec![ints("pads", &[-1, 0, 0, 0])],
        vec![int("group", 0)],
        vec![int("group", -3)],
        vec![int("group", 5)],
        vec![ints("pads", &[big, big, big, big])],
        vec![ints("pads", &[0, 0, 1 << 20, 1 << 20])],
        vec![ints("dilations", &[i64::MAX, i64::MAX])],
        vec![ints("strides", &[i64::MAX, i64::MAX])],
        vec![ints("kernel_shape", &[0, 0])],
        vec![ints("kernel_shape", &[i64::MAX, 3])],
    ];
    for attrs in cases {
        let m = one_node(
            conv(&["x", "w"], attrs.clone()),
            vec![init_f32("w", &[4, 3, 5, 5])],
            Some(&[1, 3, 8, 8]),
        );
        // Huge strides are legal (one output pixel); everything else must fail.
        match run(&m, &[ones(&[1, 3, 8, 8])]) {
            Ok(out) => assert!(
                attrs[0].name() == "strides" && attrs[0].ints[0] == i64::MAX,
                "{attrs:?} gave {:?}",
                out[0].shape()
            ),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
    for attrs in [
        vec![ints("strides", &[i64::MAX, i64::MAX])],
        vec![ints("dilations", &[i64::MAX, i64::MAX])],
        vec![ints("output_shape", &[1 << 20, 1 << 20])],
        vec![ints("output_shape", &[i64::MAX, i64::MAX])],
        vec![ints("output_padding", &[1 << 40, 0])],
        vec![ints("pads", &[1 << 62, 1 << 62, 1 << 62, 1 << 62])],
        vec![int("group", 7)],
    ] {
        let m = one_node(
            node("ConvTranspose", &["x", "w"], &["y"], attrs.clone()),
            vec![init_f32("w", &[3, 2, 3, 3])],
            Some(&[1, 3, 8, 8]),
        );
        assert_err(run(&m, &[ones(&[1, 3, 8, 8])]), &format!("{attrs:?}"));
    }
    for attrs in [
        vec![ints("kernel_shape", &[0, 2])],
        vec![
            ints("kernel_shape", &[2, 2]),
            ints("pads", &[0, 0, 1 << 40, 1 << 40]),
        ],
        vec![ints("kernel_shape", &[i64::MAX, 2])],
        vec![
            ints("kernel_shape", &[2, 2]),
            ints("dilations", &[i64::MAX, 1]),
        ],
    ] {
        let m = one_node(node("MaxPool", &["x"], &["y"], attrs.clone()), vec![], None);
        assert_err(run(&m, &[ones(&[1, 2, 8, 8])]), &format!("{attrs:?}"));
    }
}

#[test]
fn depthwise_conv_with_one_sided_padding_wider_than_the_input() {
    // Depthwise 1x5 kernel, input 1x1, 10 columns of left padding: output width 7, and only
    // the last output column sees the input (through the kernel's last tap).
    let m = one_node(
        conv(
            &["x", "w"],
            vec![int("group", 2), ints("pads", &[0, 10, 0, 0])],
        ),
        vec![tensor_to_proto(
            "w",
            &Tensor::from_vec(
                vec![2, 1, 1, 5],
                vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0],
            )
            .unwrap(),
        )],
        Some(&[1, 2, 1, 1]),
    );
    let x = Tensor::from_vec(vec![1, 2, 1, 1], vec![1.0f32, 2.0]).unwrap();
    let y = run(&m, &[x]).expect("a valid depthwise conv").remove(0);
    assert_eq!(y.shape(), &[1, 2, 1, 7]);
    let mut want = [0.0f32; 14];
    want[6] = 5.0;
    want[13] = 100.0;
    assert_eq!(y.as_slice::<f32>().unwrap(), &want[..]);
}

#[test]
fn empty_spatial_inputs_do_not_panic() {
    let sym = Some(&[-1i64, 3, -1, -1][..]);
    let x = Tensor::from_vec(vec![1, 3, 0, 8], Vec::<f32>::new()).unwrap();
    for attrs in [
        vec![string("auto_pad", "SAME_UPPER")],
        vec![string("auto_pad", "SAME_LOWER"), ints("strides", &[2, 2])],
        vec![],
    ] {
        let m = one_node(
            conv(&["x", "w"], attrs),
            vec![init_f32("w", &[4, 3, 3, 3])],
            sym,
        );
        assert_err(run(&m, std::slice::from_ref(&x)), "Conv on an empty axis");
    }
    let m = one_node(
        node("ConvTranspose", &["x", "w"], &["y"], vec![]),
        vec![init_f32("w", &[3, 2, 3, 3])],
        sym,
    );
    assert_err(
        run(&m, std::slice::from_ref(&x)),
        "ConvTranspose on an empty axis",
    );
    // ceil_mode with the window entirely in the end padding: zero output rows, no panic.
    let m = one_node(
        node(
            "MaxPool",
            &["x"],
            &["y"],
            vec![
                ints("kernel_shape", &[2, 2]),
                ints("pads", &[0, 0, 2, 0]),
                int("ceil_mode", 1),
            ],
        ),
        vec![],
        sym,
    );
    if let Ok(y) = run(&m, std::slice::from_ref(&x)) {
        assert_eq!(y[0].len(), 0);
    }
}

#[test]
fn zero_input_channels_and_empty_inner_dimensions_are_fine() {
    // MatMul and Gemm with K = 0: all zeros.
    let m = model(
        17,
        vec![node("MatMul", &["a", "b"], &["y"], vec![])],
        vec![],
        vec![vi("a", F32, Some(&[2, -1])), vi("b", F32, Some(&[-1, 3]))],
        vec![vi("y", F32, None)],
    );
    let a = Tensor::from_vec(vec![2, 0], Vec::<f32>::new()).unwrap();
    let b = Tensor::from_vec(vec![0, 3], Vec::<f32>::new()).unwrap();
    let y = run(&m, &[a.clone(), b.clone()])
        .expect("K = 0 MatMul")
        .remove(0);
    assert_eq!(
        (y.shape(), y.as_slice::<f32>().unwrap()),
        (&[2, 3][..], &[0.0; 6][..])
    );
    let m = model(
        17,
        vec![node("Gemm", &["a", "b"], &["y"], vec![])],
        vec![],
        vec![vi("a", F32, Some(&[2, -1])), vi("b", F32, Some(&[-1, 3]))],
        vec![vi("y", F32, None)],
    );
    let y = run(&m, &[a, b]).expect("K = 0 Gemm").remove(0);
    assert_eq!(y.shape(), &[2, 3]);
    // Constant [K = 0, 3] B packed at compile time.
    let m = model(
        17,
        vec![node("MatMul", &["a", "b"], &["y"], vec![])],
        vec![tensor_to_proto(
            "b",
            &Tensor::from_vec(vec![0, 3], Vec::<f32>::new()).unwrap(),
        )],
        vec![vi("a", F32, Some(&[2, -1]))],
        vec![vi("y", F32, None)],
    );
    let a = Tensor::from_vec(vec![2, 0], Vec::<f32>::new()).unwrap();
    let y = run(&m, &[a]).expect("K = 0 MatMul, constant B").remove(0);
    assert_eq!(y.shape(), &[2, 3]);
    // Conv weights with zero input channels.
    let m = one_node(
        conv(&["x", "w"], vec![]),
        vec![tensor_to_proto(
            "w",
            &Tensor::from_vec(vec![4, 0, 3, 3], Vec::<f32>::new()).unwrap(),
        )],
        Some(&[1, -1, 8, 8]),
    );
    let x = Tensor::from_vec(vec![1, 0, 8, 8], Vec::<f32>::new()).unwrap();
    let y = run(&m, &[x]).expect("zero input channels").remove(0);
    assert_eq!(y.shape(), &[1, 4, 6, 6]);
}

/// Batched Concat and Transpose run one image per task on planned runs: the same values as
/// the first (serial) run, also when a part or the whole output is empty.
#[test]
fn batched_concat_and_transpose_agree_on_planned_runs() {
    let m = model(
        17,
        vec![
            node("Concat", &["a", "b"], &["c"], vec![int("axis", 1)]),
            node("Transpose", &["c"], &["y"], vec![ints("perm", &[0, 2, 1])]),
        ],
        vec![],
        vec![
            vi("a", F32, Some(&[-1, 2, -1])),
            vi("b", F32, Some(&[-1, -1, -1])),
        ],
        vec![vi("y", F32, None)],
    );
    let exe = compile(&m).unwrap();
    let (n, w) = (3, 4);
    let a = Tensor::from_vec(vec![n, 2, w], (0..n * 2 * w).map(|v| v as f32).collect()).unwrap();
    for bc in [3, 0] {
        let b = Tensor::from_vec(
            vec![n, bc, w],
            (0..n * bc * w).map(|v| -(v as f32)).collect(),
        )
        .unwrap();
        let views = [a.view(), b.view()];
        let first = exe.run(&views).expect("first run").remove(0);
        assert_eq!(first.shape(), &[n, w, 2 + bc]);
        // y[i, x, j] = a[i, j, x] for j < 2, else b[i, j - 2, x].
        let (av, bv) = (a.as_slice::<f32>().unwrap(), b.as_slice::<f32>().unwrap());
        let want: Vec<f32> = (0..n)
            .flat_map(|i| (0..w).flat_map(move |x| (0..2 + bc).map(move |j| (i, x, j))))
            .map(|(i, x, j)| {
                if j < 2 {
                    av[(i * 2 + j) * w + x]
                } else {
                    bv[(i * bc + j - 2) * w + x]
                }
            })
            .collect();
        assert_eq!(
            first.as_slice::<f32>().unwrap(),
            &want[..],
            "first run, b has {bc}"
        );
        for _ in 0..2 {
            let again = exe.run(&views).expect("planned run").remove(0);
            assert_eq!(
                again.as_slice::<f32>().unwrap(),
                &want[..],
                "planned run, b has {bc}"
            );
        }
    }
    // An empty output: nothing to split.
    let a = Tensor::from_vec(vec![n, 2, 0], Vec::<f32>::new()).unwrap();
    let b = Tensor::from_vec(vec![n, 1, 0], Vec::<f32>::new()).unwrap();
    for _ in 0..3 {
        let y = exe
            .run(&[a.view(), b.view()])
            .expect("empty output")
            .remove(0);
        assert_eq!(y.shape(), &[n, 0, 3]);
    }
}

// ---- BatchNorm folding --------------------------------------------------------------------

fn conv_bn(
    w: TensorProto,
    bias: Option<TensorProto>,
    ch: usize,
    op: &str,
    attrs: Vec<AttributeProto>,
) -> Vec<u8> {
    let mut inits = vec![w];
    let conv_in: Vec<&str> = if bias.is_some() {
        vec!["x", "w", "b"]
    } else {
        vec!["x", "w"]
    };
    inits.extend(bias);
    for p in ["scale", "bias_bn", "mean", "var"] {
        inits.push(init_f32(p, &[ch]));
    }
    model(
        17,
        vec![
            node(op, &conv_in, &["c"], attrs),
            node(
                "BatchNormalization",
                &["c", "scale", "bias_bn", "mean", "var"],
                &["y"],
                vec![],
            ),
        ],
        inits,
        vec![vi("x", F32, Some(&[1, 3, 8, 8]))],
        vec![vi("y", F32, None)],
    )
}

#[test]
fn batchnorm_folding_survives_odd_weights() {
    // Zero output channels: nothing to fold, an empty result.
    let m = conv_bn(
        tensor_to_proto(
            "w",
            &Tensor::from_vec(vec![0, 3, 3, 3], Vec::<f32>::new()).unwrap(),
        ),
        None,
        0,
        "Conv",
        vec![],
    );
    if let Ok(y) = run(&m, &[ones(&[1, 3, 8, 8])]) {
        assert_eq!(y[0].len(), 0);
    }
    // A bias of the wrong length.
    let m = conv_bn(
        init_f32("w", &[4, 3, 3, 3]),
        Some(init_f32("b", &[2])),
        4,
        "Conv",
        vec![],
    );
    assert_err(run(&m, &[ones(&[1, 3, 8, 8])]), "bias of 2 for 4 channels");
    // ConvTranspose with more groups than input channels.
    let m = conv_bn(
        init_f32("w", &[3, 2, 3, 3]),
        None,
        8,
        "ConvTranspose",
        vec![int("group", 4)],
    );
    assert_err(
        run(&m, &[ones(&[1, 3, 8, 8])]),
        "ConvTranspose group 4 on 3 channels",
    );
}

// ---- LSTM, Gemm, MatMul --------------------------------------------------------------------

fn lstm(attrs: Vec<AttributeProto>, w: &[usize], r: &[usize]) -> Vec<u8> {
    model(
        17,
        vec![node("LSTM", &["x", "w", "r"], &["y"], attrs)],
        vec![init_f32("w", w), init_f32("r", r)],
        vec![vi("x", F32, Some(&[5, 1, 4]))],
        vec![vi("y", F32, None)],
    )
}

#[test]
fn lstm_attributes_and_weights_are_checked() {
    let x = ones(&[5, 1, 4]);
    let h = |v| int("hidden_size", v);
    for (attrs, w, r) in [
        (vec![h(2), int("layout", 2)], [1, 8, 4], [1, 8, 2]),
        (vec![h(2), int("layout", -1)], [1, 8, 4], [1, 8, 2]),
        (vec![h(1 << 62)], [1, 8, 4], [1, 8, 2]),
        (vec![h(i64::MAX)], [1, 8, 4], [1, 8, 2]),
        (vec![h(0)], [1, 8, 4], [1, 8, 2]),
        (vec![h(2)], [1, 8, 3], [1, 8, 2]),
        (vec![h(2)], [1, 8, 4], [1, 8, 3]),
        (
            vec![h(2), string("direction", "bidirectional")],
            [1, 8, 4],
            [1, 8, 2],
        ),
    ] {
        let m = lstm(attrs.clone(), &w, &r);
        assert_err(
            run(&m, std::slice::from_ref(&x)),
            &format!("LSTM {attrs:?} W {w:?} R {r:?}"),
        );
    }
    let m = lstm(vec![h(2)], &[1, 8, 4], &[1, 8, 2]);
    assert_eq!(run(&m, &[x]).unwrap()[0].shape(), &[5, 1, 1, 2]);
}

#[test]
fn gemm_and_matmul_shape_mismatches_are_errors() {
    let two = |op: &str, a: &[i64], b: &[usize], attrs| {
        model(
            17,
            vec![node(op, &["a", "b"], &["y"], attrs)],
            vec![init_f32("b", b)],
            vec![vi("a", F32, Some(a))],
            vec![vi("y", F32, None)],
        )
    };
    let a = ones(&[2, 3]);
    assert_err(
        run(
            &two("Gemm", &[2, 3], &[4, 5], vec![]),
            std::slice::from_ref(&a),
        ),
        "Gemm K",
    );
    assert_err(
        run(
            &two("Gemm", &[2, 3], &[3, 5, 1], vec![]),
            std::slice::from_ref(&a),
        ),
        "Gemm 3-D B",
    );
    assert_err(
        run(
            &two("Gemm", &[2, 3], &[3], vec![]),
            std::slice::from_ref(&a),
        ),
        "Gemm 1-D B",
    );
    assert_err(
        run(
            &two("MatMul", &[2, 3], &[4, 5], vec![]),
            std::slice::from_ref(&a),
        ),
        "MatMul K",
    );
    assert_err(
        run(
            &two("MatMul", &[-1, -1], &[4, 5], vec![]),
            std::slice::from_ref(&a),
        ),
        "MatMul K at run time",
    );
    assert_err(
        run(
            &two("MatMul", &[-1, -1], &[], vec![]),
            std::slice::from_ref(&a),
        ),
        "MatMul scalar B",
    );
}

// ---- shape arithmetic with huge values --------------------------------------------------

/// `y = op(x, c)` with x an f32 graph input of `x_dims` and c an i64 constant.
fn with_const(op: &str, x_dims: &[i64], c: &[i64], attrs: Vec<AttributeProto>) -> Vec<u8> {
    model(
        17,
        vec![node(op, &["x", "c"], &["y"], attrs)],
        vec![init_i64("c", c)],
        vec![vi("x", F32, Some(x_dims))],
        vec![vi("y", F32, None)],
    )
}

#[test]
fn huge_reshape_expand_tile_pad_targets_are_errors() {
    let x = ones(&[1, 3]);
    let big = 1i64 << 40;
    for (op, c) in [
        ("Reshape", vec![big, big]),
        ("Reshape", vec![big, big, 0, -1]),
        ("Reshape", vec![-1, big]),
        ("Expand", vec![big, big, 1]),
        ("Expand", vec![1 << 20, 1 << 20, 1]),
        ("Expand", vec![big, big, big, 3]),
        ("Tile", vec![big, big]),
        ("Tile", vec![1 << 20, 1 << 20]),
        ("Tile", vec![i64::MAX, 2]),
        ("Tile", vec![2]),
        ("Pad", vec![0, 0, big, big]),
        ("Pad", vec![0, 0, i64::MAX, i64::MAX]),
        ("Pad", vec![i64::MIN, 0, 0, 0]),
        ("Pad", vec![1 << 20, 1 << 20, 1 << 20, 1 << 20]),
    ] {
        let m = with_const(op, &[1, 3], &c, vec![]);
        assert_err(run(&m, std::slice::from_ref(&x)), &format!("{op} {c:?}"));
        // Same with the shape known only at run time.
        let m = with_const(op, &[-1, -1], &c, vec![]);
        assert_err(
            run(&m, std::slice::from_ref(&x)),
            &format!("{op} {c:?} (symbolic)"),
        );
    }
}

#[test]
fn huge_runtime_shape_values_are_errors() {
    // The shape arrives as a graph input, so nothing can be checked before the run.
    for (op, v) in [
        ("ConstantOfShape", vec![1i64 << 20, 1 << 20]),
        ("ConstantOfShape", vec![1 << 40, 1 << 40, 1 << 40]),
        ("ConstantOfShape", vec![-1, 4]),
        ("Expand", vec![1 << 20, 1 << 20]),
        ("Tile", vec![1 << 40, 1]),
        ("Tile", vec![1 << 16, 1 << 16]),
        ("Reshape", vec![1 << 40, 1 << 40]),
        ("Pad", vec![0, 1 << 40, 0, 0]),
    ] {
        let (nodes, inputs, feeds) = if op == "ConstantOfShape" {
            (
                vec![node(op, &["s"], &["y"], vec![])],
                vec![vi("s", I64, Some(&[-1]))],
                vec![Tensor::from_vec(vec![v.len()], v.clone()).unwrap()],
            )
        } else {
            (
                vec![node(op, &["x", "s"], &["y"], vec![])],
                vec![vi("x", F32, Some(&[-1, -1])), vi("s", I64, Some(&[-1]))],
                vec![
                    ones(&[1, 3]),
                    Tensor::from_vec(vec![v.len()], v.clone()).unwrap(),
                ],
            )
        };
        let m = model(17, nodes, vec![], inputs, vec![vi("y", F32, None)]);
        assert_err(run(&m, &feeds), &format!("{op} {v:?}"));
    }
}

#[test]
fn huge_constant_of_shape_and_range_are_errors() {
    let m = model(
        17,
        vec![node("ConstantOfShape", &["s"], &["y"], vec![])],
        vec![init_i64("s", &[1 << 40, 1 << 40, 1 << 40])],
        vec![],
        vec![vi("y", F32, None)],
    );
    assert_err(run(&m, &[]), "ConstantOfShape 2^120");
    let m = model(
        17,
        vec![node("ConstantOfShape", &["s"], &["y"], vec![])],
        vec![init_i64("s", &[1 << 20, 1 << 20])],
        vec![],
        vec![vi("y", F32, None)],
    );
    assert_err(run(&m, &[]), "ConstantOfShape 2^40");
    for (s, l, d) in [
        (0i64, i64::MAX, 1i64),
        (i64::MIN, i64::MAX, 1),
        (i64::MAX, i64::MIN, -1),
        (0, 10, 0),
        (i64::MIN, i64::MAX, i64::MAX),
    ] {
        // Constant inputs (folded) and graph inputs (evaluated at run time).
        let scalar = |n: &str, v: i64| tensor_to_proto(n, &Tensor::scalar(v));
        let m = model(
            17,
            vec![node("Range", &["s", "l", "d"], &["y"], vec![])],
            vec![scalar("s", s), scalar("l", l), scalar("d", d)],
            vec![],
            vec![vi("y", I64, None)],
        );
        let r = run(&m, &[]);
        if s == i64::MIN && d == i64::MAX {
            // Three elements: fine either way, as long as it does not panic.
            if let Ok(v) = r {
                assert_eq!(v[0].len(), 3);
            }
        } else {
            assert_err(r, &format!("Range({s}, {l}, {d})"));
        }
        let m = model(
            17,
            vec![node("Range", &["s", "l", "d"], &["y"], vec![])],
            vec![],
            vec![
                vi("s", I64, Some(&[])),
                vi("l", I64, Some(&[])),
                vi("d", I64, Some(&[])),
            ],
            vec![vi("y", I64, None)],
        );
        let r = run(
            &m,
            &[Tensor::scalar(s), Tensor::scalar(l), Tensor::scalar(d)],
        );
        if s == i64::MIN && d == i64::MAX {
            if let Ok(v) = r {
                assert_eq!(v[0].len(), 3);
            }
        } else {
            assert_err(r, &format!("Range({s}, {l}, {d}) at run time"));
        }
    }
    for (s, l, d) in [
        (0.0f32, 1e30, 1.0),
        (0.0, f32::INFINITY, 1.0),
        (0.0, 1.0, f32::NAN),
    ] {
        let m = model(
            17,
            vec![node("Range", &["s", "l", "d"], &["y"], vec![])],
            vec![],
            vec![
                vi("s", F32, Some(&[])),
                vi("l", F32, Some(&[])),
                vi("d", F32, Some(&[])),
            ],
            vec![vi("y", F32, None)],
        );
        let r = run(
            &m,
            &[Tensor::scalar(s), Tensor::scalar(l), Tensor::scalar(d)],
        );
        assert_err(r, &format!("Range({s}, {l}, {d})"));
    }
}

#[test]
fn slice_with_extreme_steps() {
    let x = Tensor::from_vec(vec![1, 6], (0..6).map(|v| v as f32).collect::<Vec<_>>()).unwrap();
    let slice = |starts: i64, ends: i64, step: i64| {
        model(
            17,
            vec![node("Slice", &["x", "s", "e", "a", "st"], &["y"], vec![])],
            vec![
                init_i64("s", &[starts]),
                init_i64("e", &[ends]),
                init_i64("a", &[1]),
                init_i64("st", &[step]),
            ],
            vec![vi("x", F32, Some(&[-1, -1]))],
            vec![vi("y", F32, None)],
        )
    };
    let y = run(&slice(0, 6, i64::MAX), std::slice::from_ref(&x)).expect("huge step");
    assert_eq!(y[0].as_slice::<f32>().unwrap(), &[0.0]);
    let y =
        run(&slice(5, i64::MIN, i64::MIN), std::slice::from_ref(&x)).expect("huge negative step");
    assert_eq!(y[0].as_slice::<f32>().unwrap(), &[5.0]);
    let y = run(&slice(i64::MIN, i64::MAX, 1), std::slice::from_ref(&x)).expect("extreme bounds");
    assert_eq!(y[0].len(), 6);
}

#[test]
fn split_with_odd_outputs_and_sizes() {
    let x = ones(&[1, 6]);
    // No outputs at all.
    let m = model(
        17,
        vec![
            node("Split", &["x"], &[], vec![int("axis", 1)]),
            node("Relu", &["x"], &["y"], vec![]),
        ],
        vec![],
        vec![vi("x", F32, Some(&[1, 6]))],
        vec![vi("y", F32, None)],
    );
    let _ = run(&m, std::slice::from_ref(&x)).map(|v| assert_eq!(v[0].shape(), &[1, 6]));
    // Fewer sizes than outputs, sizes that overflow, negative sizes.
    for sizes in [vec![2i64, 4], vec![i64::MAX, i64::MAX, 8], vec![-1, 5, 2]] {
        let m = model(
            17,
            vec![node(
                "Split",
                &["x", "s"],
                &["a", "b", "y"],
                vec![int("axis", 1)],
            )],
            vec![init_i64("s", &sizes)],
            vec![vi("x", F32, Some(&[1, 6]))],
            vec![vi("y", F32, None)],
        );
        assert_err(
            run(&m, std::slice::from_ref(&x)),
            &format!("Split sizes {sizes:?}"),
        );
        let m = model(
            17,
            vec![node(
                "Split",
                &["x", "s"],
                &["a", "b", "y"],
                vec![int("axis", 1)],
            )],
            vec![init_i64("s", &sizes)],
            vec![vi("x", F32, Some(&[-1, -1]))],
            vec![vi("y", F32, None)],
        );
        assert_err(
            run(&m, std::slice::from_ref(&x)),
            &format!("Split sizes {sizes:?} at run time"),
        );
    }
}

#[test]
fn resize_scales_and_sizes_are_checked() {
    let x = ones(&[1, 1, 4, 4]);
    let resize = |scales: Option<Vec<f32>>, sizes: Option<Vec<i64>>, dims: &[i64]| {
        let mut inits = vec![];
        let mut ins = vec!["x", ""];
        if let Some(s) = scales {
            inits.push(tensor_to_proto(
                "sc",
                &Tensor::from_vec(vec![s.len()], s).unwrap(),
            ));
            ins.push("sc");
        } else {
            ins.push("");
        }
        if let Some(s) = sizes {
            inits.push(init_i64("sz", &s));
            ins.push("sz");
        }
        model(
            17,
            vec![node("Resize", &ins, &["y"], vec![])],
            inits,
            vec![vi("x", F32, Some(dims))],
            vec![vi("y", F32, None)],
        )
    };
    for dims in [&[1i64, 1, 4, 4][..], &[-1, -1, -1, -1]] {
        for scales in [
            vec![1.0f32, 1.0, 0.0, 0.0],
            vec![1.0, 1.0, -2.0, 2.0],
            vec![1.0, 1.0, f32::NAN, 2.0],
            vec![1.0, 1.0, f32::INFINITY, 2.0],
            vec![1.0, 1.0, 1e30, 1e30],
            vec![1.0, 1.0, 2.0],
        ] {
            let m = resize(Some(scales.clone()), None, dims);
            assert_err(
                run(&m, std::slice::from_ref(&x)),
                &format!("Resize scales {scales:?}"),
            );
        }
        for sizes in [
            vec![1i64, 1, -4, 4],
            vec![1, 1, 1 << 40, 1 << 40],
            vec![1, 1, 1 << 20, 1 << 20],
            vec![1, 1, 8],
        ] {
            let m = resize(None, Some(sizes.clone()), dims);
            assert_err(
                run(&m, std::slice::from_ref(&x)),
                &format!("Resize sizes {sizes:?}"),
            );
        }
    }
    // Upsampling an empty axis has nothing to sample from.
    let m = resize(None, Some(vec![1, 1, 4, 4]), &[-1, -1, -1, -1]);
    let empty = Tensor::from_vec(vec![1, 1, 0, 4], Vec::<f32>::new()).unwrap();
    assert_err(run(&m, &[empty]), "Resize of an empty axis");
}

// ---- import ---------------------------------------------------------------------------------

#[test]
fn import_rejects_odd_nodes_without_panicking() {
    // Resize at opset 10 with no inputs at all.
    let m = model(
        10,
        vec![node("Resize", &[], &["y"], vec![])],
        vec![],
        vec![vi("x", F32, Some(&[1, 1, 4, 4]))],
        vec![vi("y", F32, None)],
    );
    assert_err(compile(&m), "Resize without inputs");
    // Cast to a type code beyond i32.
    let m = one_node(
        node("Cast", &["x"], &["y"], vec![int("to", (1i64 << 32) + 1)]),
        vec![],
        Some(&[2]),
    );
    assert_err(compile(&m), "Cast to 2^32 + 1");
    // An initializer whose byte size overflows.
    let mut t = init_i64("c", &[1]);
    t.dims = vec![1 << 61];
    let m = one_node(node("Relu", &["x"], &["y"], vec![]), vec![t], Some(&[2]));
    assert_err(compile(&m), "2^61 int64 values");
    // Nodes without inputs or outputs.
    let m = model(
        17,
        vec![
            node("Shape", &[], &["s"], vec![]),
            node("Relu", &["x"], &["y"], vec![]),
        ],
        vec![],
        vec![vi("x", F32, Some(&[2]))],
        vec![vi("y", F32, None), vi("s", I64, None)],
    );
    assert_err(run(&m, &[ones(&[2])]), "Shape without input");
    let m = model(
        17,
        vec![
            node("Relu", &["x"], &[], vec![]),
            node("Relu", &["x"], &["y"], vec![]),
        ],
        vec![],
        vec![vi("x", F32, Some(&[2]))],
        vec![vi("y", F32, None)],
    );
    assert_eq!(run(&m, &[ones(&[2])]).unwrap()[0].shape(), &[2]);
}

#[test]
fn huge_declared_dims_do_not_overflow_or_allocate() {
    let big = 1i64 << 40;
    // Flatten multiplies dims; Shape of a declared huge input must not allocate it.
    let m = one_node(
        node("Flatten", &["x"], &["y"], vec![]),
        vec![],
        Some(&[big, big, big]),
    );
    assert_err(compile(&m), "Flatten of 2^120 elements");
    let m = model(
        17,
        vec![node("Shape", &["x"], &["y"], vec![])],
        vec![],
        vec![vi("x", F32, Some(&[big, big]))],
        vec![vi("y", I64, None)],
    );
    let exe = compile(&m).expect("the shape of a huge input is just two numbers");
    // The input itself can never be supplied; a small one is a shape mismatch.
    assert_err(exe.run(&[ones(&[2, 2]).view()]), "input shape mismatch");
    let m = model(
        17,
        vec![node(
            "Concat",
            &["x", "x", "x"],
            &["y"],
            vec![int("axis", 0)],
        )],
        vec![],
        vec![vi("x", F32, Some(&[i64::MAX, 1]))],
        vec![vi("y", F32, None)],
    );
    assert_err(compile(&m), "Concat of three i64::MAX dims");
}

#[test]
fn transposes_with_out_of_range_perms_are_errors() {
    let m = model(
        17,
        vec![
            node("Transpose", &["x"], &["t"], vec![ints("perm", &[1, 0])]),
            node("Transpose", &["t"], &["y"], vec![ints("perm", &[5, 0])]),
        ],
        vec![],
        vec![vi("x", F32, None)],
        vec![vi("y", F32, None)],
    );
    assert_err(run(&m, &[ones(&[2, 3])]), "perm [5, 0]");
}

// ---- seeded mutations of real models --------------------------------------------------------

/// xorshift64*: deterministic, no dependency on rand's algorithm choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn odd_int(&mut self) -> i64 {
        const ODD: [i64; 10] = [0, -1, 1, 2, 3, 7, 1 << 20, 1 << 40, i64::MAX, i64::MIN];
        ODD[self.below(ODD.len())]
    }
}

fn mutate(model: &mut ModelProto, rng: &mut Rng) {
    let g = model.graph.as_mut().expect("the model has a graph");
    let value_names: Vec<String> = g
        .node
        .iter()
        .flat_map(|n| n.output.iter().cloned())
        .chain(g.initializer.iter().map(|t| t.name().to_string()))
        .collect();
    match rng.below(10) {
        // An attribute value: ints, int, float; or the attribute dropped.
        0..=4 => {
            let ni = rng.below(g.node.len());
            let node = &mut g.node[ni];
            if node.attribute.is_empty() {
                node.attribute.push(ints("kernel_shape", &[3, 3]));
                return;
            }
            let ai = rng.below(node.attribute.len());
            let v = rng.odd_int();
            let a = &mut node.attribute[ai];
            match rng.below(6) {
                0 => {
                    node.attribute.remove(ai);
                }
                1 => a.ints.push(v),
                2 => {
                    a.ints.pop();
                }
                3 => a.f = Some([0.0, -1.0, f32::NAN, f32::INFINITY, 1e30][rng.below(5)]),
                _ => {
                    if a.ints.is_empty() {
                        a.i = Some(v);
                    } else {
                        let k = rng.below(a.ints.len());
                        a.ints[k] = v;
                    }
                }
            }
        }
        // Inputs swapped, rewired to another value, or dropped.
        5 | 6 => {
            let ni = rng.below(g.node.len());
            let node = &mut g.node[ni];
            if node.input.is_empty() {
                return;
            }
            let i = rng.below(node.input.len());
            match rng.below(3) {
                0 => {
                    let j = rng.below(node.input.len());
                    node.input.swap(i, j);
                }
                1 if !value_names.is_empty() => {
                    node.input[i] = value_names[rng.below(value_names.len())].clone();
                }
                _ => node.input[i] = String::new(),
            }
        }
        // An initializer reshaped (same element count, other layout) or given odd dims.
        7 | 8 => {
            if g.initializer.is_empty() {
                return;
            }
            let ti = rng.below(g.initializer.len());
            let t = &mut g.initializer[ti];
            match rng.below(3) {
                0 => t.dims.reverse(),
                1 => t.dims = vec![t.dims.iter().product()],
                _ => {
                    if !t.dims.is_empty() {
                        let k = rng.below(t.dims.len());
                        t.dims[k] = rng.odd_int();
                    }
                }
            }
        }
        // The op type of a node replaced by another one's.
        _ => {
            let (a, b) = (rng.below(g.node.len()), rng.below(g.node.len()));
            let op = g.node[b].op_type.clone();
            g.node[a].op_type = op;
        }
    }
}

/// Loads, optimizes, compiles and (when the inputs are small) runs a mutated model. Errors are
/// fine; a panic fails the test.
fn exercise(bytes: &[u8], run_it: bool) {
    let Ok(mut g) = parse_model(bytes, None) else {
        return;
    };
    if passes::optimize(&mut g).is_err() {
        return;
    }
    let options = CompileOptions {
        threads: Some(1),
        ..Default::default()
    };
    let Ok(exe) = CpuBackend::new().compile(&g, &options) else {
        return;
    };
    if !run_it {
        return;
    }
    let mut feeds = Vec::new();
    for vi in &g.inputs {
        let Some(shape) = vi.shape.as_ref() else {
            return;
        };
        let shape: Vec<usize> = shape.iter().map(|d| d.known().unwrap_or(1)).collect();
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if n.is_none_or(|n| n > 1 << 20) {
            return;
        }
        feeds.push(accel_core::Tensor::zeros(vi.dtype, shape));
    }
    let views: Vec<_> = feeds.iter().map(|t| t.view()).collect();
    let _ = exe.run(&views);
}

#[test]
fn seeded_mutations_of_real_models_never_panic() {
    let models = [
        (model_path("crnn.onnx"), 300, 1),
        (
            workspace_root().join("tests/fixtures/unet128_torch.onnx"),
            120,
            8,
        ),
    ];
    for (path, count, run_every) in models {
        if !require(
            path.exists(),
            "model mutations",
            &format!("{} is missing", path.display()),
        ) {
            continue;
        }
        let original = ModelProto::decode(&std::fs::read(&path).unwrap()[..]).unwrap();
        let mut rng = Rng(0x5eed_0000_0000_0001);
        for i in 0..count {
            let mut m = original.clone();
            for _ in 0..1 + rng.below(3) {
                mutate(&mut m, &mut rng);
            }
            exercise(&m.encode_to_vec(), i % run_every == 0);
        }
    }
}

/// Runs from several threads at once into one compiled graph: every worker thread is shared
/// (and spins while a run is on), so this is where a scheduling bug would hang or mix
/// results. Each thread's answer must equal the one-at-a-time answer, bit for bit.
#[test]
fn concurrent_runs_of_one_graph_agree_with_serial_runs() {
    let mut g = accel_core::onnx::load_model(model_path("unet128.onnx")).unwrap();
    passes::optimize(&mut g).unwrap();
    let opts = CompileOptions {
        threads: Some(2),
        ..Default::default()
    };
    let exe = CpuBackend::new().compile(&g, &opts).unwrap();
    let inputs: Vec<Tensor> = (0..4)
        .map(|_| accel_tests::random_f32(&[1, 128, 128, 3], 0.0, 1.0))
        .collect();
    let serial: Vec<Vec<Tensor>> = inputs
        .iter()
        .map(|x| exe.run(&[x.view()]).unwrap())
        .collect();
    std::thread::scope(|s| {
        for (x, want) in inputs.iter().zip(&serial) {
            let exe = &exe;
            s.spawn(move || {
                for _ in 0..5 {
                    let got = exe.run(&[x.view()]).unwrap();
                    for (a, b) in got.iter().zip(want) {
                        assert_eq!(
                            accel_tests::max_abs_diff(a, b),
                            0.0,
                            "a concurrent run differs from the serial run on the same input"
                        );
                    }
                }
            });
        }
    });
}

/// Batches of a graph that treats images independently run one sub-batch per worker: the
/// U-Net at batch 4 and 9 on two threads (2 + 2 and 5 + 4 images), image for image equal to
/// one-image runs on one thread, first and planned runs.
#[test]
fn image_parallel_runs_match_image_by_image_runs() {
    use accel_core::Precision;
    use accel_cpu::CpuExecutable;
    let mut g = accel_core::onnx::load_model(model_path("unet128.onnx")).unwrap();
    passes::optimize(&mut g).unwrap();
    let split = CpuExecutable::new(&g, 2, Precision::F32).unwrap();
    let serial = CpuExecutable::new(&g, 1, Precision::F32).unwrap();
    assert_eq!(split.image_split(4), Some(vec![2, 2]));
    assert_eq!(split.image_split(9), Some(vec![5, 4]));
    // Too few images to share evenly: the operators split instead.
    assert_eq!(split.image_split(3), None);
    assert_eq!(split.image_split(1), None);
    assert_eq!(serial.image_split(4), None);
    for n in [4, 9] {
        let x = accel_tests::random_f32(&[n, 128, 128, 3], 0.0, 1.0);
        let xs = x.as_slice::<f32>().unwrap();
        let image = 128 * 128 * 3;
        let want: Vec<Tensor> = (0..n)
            .map(|i| {
                let xi = Tensor::from_vec(
                    vec![1, 128, 128, 3],
                    xs[i * image..(i + 1) * image].to_vec(),
                )
                .unwrap();
                serial.run(&[xi.view()]).unwrap().remove(0)
            })
            .collect();
        for run in ["first", "planned"] {
            let y = split.run(&[x.view()]).unwrap().remove(0);
            assert_eq!(y.shape(), &[n, 128, 128, 1], "batch {n}, {run} run");
            let ys = y.as_slice::<f32>().unwrap();
            for (i, w) in want.iter().enumerate() {
                let w = w.as_slice::<f32>().unwrap();
                let got = &ys[i * w.len()..(i + 1) * w.len()];
                let d = got
                    .iter()
                    .zip(w)
                    .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(
                    d <= 1e-5,
                    "batch {n}, {run} run, image {i}: max abs diff {d}"
                );
            }
        }
    }
}

/// Graphs whose operators mix the images of a batch, or whose inputs fix the batch size,
/// always run whole; those that only reshape each image are split, with the right values.
#[test]
fn graphs_that_mix_images_run_whole() {
    use accel_core::Precision;
    use accel_cpu::CpuExecutable;
    // One node from x [batch, 2, 3] to y.
    let one = |n: NodeProto, inits: Vec<TensorProto>, x_dims: &[i64]| {
        let x = vi("x", F32, Some(x_dims));
        model(17, vec![n], inits, vec![x], vec![vi("y", F32, None)])
    };
    let batch = [-1, 2, 3];
    let reshape = |to: &[i64]| {
        let n = node("Reshape", &["x", "s"], &["y"], vec![]);
        one(n, vec![init_i64("s", to)], &batch)
    };
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("Reshape of each image", reshape(&[-1, 6]), true),
        ("Reshape across images", reshape(&[-1, 3]), false),
        (
            "Transpose moving the batch",
            one(
                node("Transpose", &["x"], &["y"], vec![ints("perm", &[1, 0, 2])]),
                vec![],
                &batch,
            ),
            false,
        ),
        (
            "Concat along the batch",
            one(
                node("Concat", &["x", "x"], &["y"], vec![int("axis", 0)]),
                vec![],
                &batch,
            ),
            false,
        ),
        (
            "Softmax over the batch",
            one(
                node("Softmax", &["x"], &["y"], vec![int("axis", 0)]),
                vec![],
                &batch,
            ),
            false,
        ),
        (
            "a fixed batch of 4",
            one(node("Relu", &["x"], &["y"], vec![]), vec![], &[4, 2, 3]),
            false,
        ),
    ];
    for (what, bytes, splits) in cases {
        let mut g = parse_model(&bytes, None).unwrap();
        passes::optimize(&mut g).unwrap();
        let exe = CpuExecutable::new(&g, 2, Precision::F32).unwrap();
        let want = splits.then(|| vec![2, 2]);
        assert_eq!(exe.image_split(4), want, "{what}");
        let x = Tensor::from_vec(vec![4, 2, 3], (0..24).map(|v| v as f32 - 5.0).collect()).unwrap();
        let got = exe.run(&[x.view()]).unwrap().remove(0);
        let reference = accel_cpu::CpuExecutable::new(&g, 1, Precision::F32)
            .unwrap()
            .run(&[x.view()])
            .unwrap()
            .remove(0);
        assert_eq!(got, reference, "{what}");
    }
    // The CRNN reads its batch through Shape and runs its LSTM time-major.
    let mut g = accel_core::onnx::load_model(model_path("crnn.onnx")).unwrap();
    passes::optimize(&mut g).unwrap();
    let exe = CpuExecutable::new(&g, 2, Precision::F32).unwrap();
    assert_eq!(exe.image_split(4), None, "crnn");
}

/// At batch 1 a Concat along channels takes its inputs in place (their producers write into
/// its output, the Concat step is skipped on planned runs): values kept alive past the
/// Concat, a Concat of a Concat, and a Concat with a graph input (which stays a copy) all
/// give the first run's result on planned runs.
#[test]
fn concats_written_in_place_keep_their_values() {
    let conv = |x: &str, w: &str, y: &str| node("Conv", &[x, w], &[y], vec![]);
    let same = ints("pads", &[1, 1, 1, 1]);
    let m = model(
        17,
        vec![
            conv("x", "w1", "a"),
            node("Conv", &["x", "w2"], &["b"], vec![same]),
            node("Concat", &["a", "b"], &["ab"], vec![int("axis", 1)]),
            conv("ab", "w3", "c"),
            // `a` is read again after the Concat (a skip connection's pattern).
            node("Concat", &["c", "a"], &["ca"], vec![int("axis", -3)]),
            node("Concat", &["ca", "ab"], &["cab"], vec![int("axis", 1)]),
            node("Concat", &["cab", "x"], &["y"], vec![int("axis", 1)]),
            node("Relu", &["a"], &["z"], vec![]),
        ],
        vec![
            init_f32("w1", &[3, 2, 1, 1]),
            init_f32("w2", &[5, 2, 3, 3]),
            init_f32("w3", &[4, 8, 1, 1]),
        ],
        vec![vi("x", F32, Some(&[-1, 2, 8, 6]))],
        vec![vi("y", F32, None), vi("z", F32, None)],
    );
    let exe = compile(&m).unwrap();
    for n in [1, 2] {
        let x = accel_tests::random_f32(&[n, 2, 8, 6], -1.0, 1.0);
        let first = exe.run(&[x.view()]).expect("first run");
        assert_eq!(first[0].shape(), &[n, 4 + 3 + 3 + 5 + 2, 8, 6]);
        for run in 0..2 {
            let again = exe.run(&[x.view()]).expect("planned run");
            assert_eq!(again, first, "batch {n}, planned run {run}");
        }
    }
}

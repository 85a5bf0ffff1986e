//! Folds a zero, constant-mode Pad into the Conv that reads it: tf2onnx turns Keras "same"
//! padding of strided convs into an explicit Pad node, which would otherwise copy the whole
//! activation once more.

use crate::ir::{AutoPad, Graph, Op, PadMode};

/// Returns how many Pads were folded.
pub fn fold_pads_into_convs(graph: &mut Graph) -> usize {
    let mut folded = 0;
    let mut i = 0;
    while i < graph.nodes.len() {
        if let Some((pad_idx, spatial)) = foldable(graph, i) {
            let src = graph.nodes[pad_idx].inputs[0].clone();
            let Op::Conv(c) = &mut graph.nodes[i].op else {
                unreachable!("checked by foldable")
            };
            let n = spatial.len() / 2;
            let old = if c.window.pads.is_empty() {
                vec![0; 2 * n]
            } else {
                c.window.pads.clone()
            };
            c.window.pads = old.iter().zip(&spatial).map(|(a, b)| a + b).collect();
            graph.nodes[i].inputs[0] = src;
            graph.nodes.remove(pad_idx);
            folded += 1;
        } else {
            i += 1;
        }
    }
    folded
}

/// For a Conv at `i` fed by a foldable Pad: the Pad's index and its spatial pads (begins, ends).
fn foldable(graph: &Graph, i: usize) -> Option<(usize, Vec<usize>)> {
    let Op::Conv(conv) = &graph.nodes[i].op else {
        return None;
    };
    if conv.window.auto_pad != AutoPad::NotSet {
        return None;
    }
    let x = graph.nodes[i].input(0)?;
    let p = graph.nodes[..i]
        .iter()
        .position(|n| n.outputs.first().map(String::as_str) == Some(x))?;
    let pad = &graph.nodes[p];
    if pad.op
        != (Op::Pad {
            mode: PadMode::Constant,
        })
        || pad.input(3).is_some()
    {
        return None;
    }
    if graph.use_counts().get(x).copied() != Some(1) || graph.is_graph_output(x) {
        return None;
    }
    if let Some(v) = pad.input(2) {
        let value = graph.constant(v)?.to_f32_vec().ok()?;
        if value.iter().any(|&v| v != 0.0) {
            return None;
        }
    }
    pad.input(0)?;
    let pads = graph.constant(pad.input(1)?)?.to_i64_vec().ok()?;
    let rank = pads.len() / 2;
    // Huge pads stay with the Pad node, which reports them.
    if rank < 3 || pads.len() % 2 != 0 || pads.iter().any(|&v| !(0..=1 << 32).contains(&v)) {
        return None;
    }
    // The conv's own pads must fit the same spatial axes.
    if !conv.window.pads.is_empty() && conv.window.pads.len() != 2 * (rank - 2) {
        return None;
    }
    // Batch and channel axes must not be padded.
    if pads[0] != 0 || pads[1] != 0 || pads[rank] != 0 || pads[rank + 1] != 0 {
        return None;
    }
    let begins = pads[2..rank].iter().map(|&v| v as usize);
    let ends = pads[rank + 2..].iter().map(|&v| v as usize);
    Some((p, begins.chain(ends).collect()))
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{graph, node};
    use super::*;
    use crate::Tensor;
    use crate::ir::{Conv, Window};

    fn conv(pads: Vec<usize>) -> Op {
        Op::Conv(Conv {
            window: Window {
                kernel_shape: vec![3, 3],
                strides: vec![2, 2],
                pads,
                ..Default::default()
            },
            group: 1,
            activation: None,
        })
    }

    #[test]
    fn zero_pad_folds_and_other_pads_do_not() {
        let pads = Tensor::from_vec(vec![8], vec![0i64, 0, 0, 1, 0, 0, 1, 2]).unwrap();
        let mut g = graph(
            &[("x", &[1, 2, 8, 8])],
            &["y"],
            vec![
                node(
                    "pad",
                    Op::Pad {
                        mode: PadMode::Constant,
                    },
                    &["x", "pads"],
                    &["p"],
                ),
                node("conv", conv(vec![]), &["p", "w"], &["y"]),
            ],
            vec![
                ("pads", pads.clone()),
                ("w", Tensor::zeros(crate::DType::F32, vec![4, 2, 3, 3])),
            ],
        );
        assert_eq!(fold_pads_into_convs(&mut g), 1);
        assert_eq!(g.nodes.len(), 1);
        let Op::Conv(c) = &g.nodes[0].op else {
            panic!()
        };
        assert_eq!(c.window.pads, vec![0, 1, 1, 2]);
        assert_eq!(g.nodes[0].inputs[0], "x");

        // A non-zero fill value, or a reflect pad, must stay.
        for (op, value) in [
            (
                Op::Pad {
                    mode: PadMode::Constant,
                },
                1.0f32,
            ),
            (
                Op::Pad {
                    mode: PadMode::Reflect,
                },
                0.0,
            ),
        ] {
            let mut g = graph(
                &[("x", &[1, 2, 8, 8])],
                &["y"],
                vec![
                    node("pad", op, &["x", "pads", "v"], &["p"]),
                    node("conv", conv(vec![]), &["p", "w"], &["y"]),
                ],
                vec![
                    ("pads", pads.clone()),
                    ("v", Tensor::scalar(value)),
                    ("w", Tensor::zeros(crate::DType::F32, vec![4, 2, 3, 3])),
                ],
            );
            assert_eq!(fold_pads_into_convs(&mut g), 0);
        }
    }
}

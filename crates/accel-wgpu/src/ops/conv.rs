//! Conv (dense, grouped, depthwise) and ConvTranspose over NCHW images, bias and activation
//! fused (`kernels/conv.wgsl`, `kernels/conv_transpose.wgsl`): dense convs with 16 or more
//! output channels as a tiled implicit GEMM, the rest direct.

use super::{Lowering, Operand, activation_params, window_params};
use crate::kernels::{Family, Kernel};
use accel_core::ir::{Activation, Conv, ConvTranspose, Window};
use accel_core::ops::{resolve_conv_transpose, resolve_window, spatial_2d};
use accel_core::{Error, Node, Result};

const CONV: Kernel = Kernel {
    family: Family::Conv,
    entry: "conv",
};
const CONV_TILED: Kernel = Kernel {
    family: Family::Conv,
    entry: "conv_tiled",
};
const CONV_TRANSPOSE: Kernel = Kernel {
    family: Family::ConvTranspose,
    entry: "conv_transpose",
};
const CONV_TRANSPOSE_TILED: Kernel = Kernel {
    family: Family::ConvTranspose,
    entry: "conv_transpose_tiled",
};

/// N, C and the (height, width) of a 1-D or 2-D image input.
fn image(node: &Node, shape: &[usize]) -> Result<(usize, usize, [usize; 2], bool)> {
    match *shape {
        [n, c, w] => Ok((n, c, [1, w], true)),
        [n, c, h, w] => Ok((n, c, [h, w], false)),
        _ => Err(Error::node(
            node,
            format!("the wgpu backend convolves 1-D and 2-D images, not {shape:?}"),
        )),
    }
}

/// The bias constant of input 2, or zeros for `oc` channels.
fn bias(l: &mut Lowering, node: &Node, oc: usize) -> Result<Operand> {
    if Lowering::has_input(node, 2) {
        let b = l.const_input(node, 2, "the bias")?;
        if b.len() != oc {
            return Err(Error::node(
                node,
                format!("bias has {} values for {oc} output channels", b.len()),
            ));
        }
        return l.input(node, 2);
    }
    Ok(Operand::Const(
        l.upload_f32(&format!("zeros#{oc}"), vec![0.0; oc])?,
    ))
}

#[allow(clippy::too_many_arguments)]
fn dispatch(
    l: &mut Lowering,
    node: &Node,
    kernel: Kernel,
    (n, c, [h, w]): (usize, usize, [usize; 2]),
    (oc, [oh, ow]): (usize, [usize; 2]),
    rw: &accel_core::ops::ResolvedWindow,
    group: usize,
    act: Option<Activation>,
) -> Result<()> {
    let x = l.input(node, 0)?;
    let wt = l.input(node, 1)?;
    let b = bias(l, node, oc)?;
    let out = l.output(node, 0)?;
    let n_out = n * oc * oh * ow;
    let u = |v: usize| Lowering::u32_of(node, v);
    let mut params = vec![
        u(n_out)?,
        u(n)?,
        u(c)?,
        u(h)?,
        u(w)?,
        u(oc)?,
        u(oh)?,
        u(ow)?,
    ];
    params.extend(window_params(node, rw)?);
    params.push(u(group)?);
    params.extend(activation_params(act));
    let bindings = vec![(1, x), (2, wt), (3, b), (4, Operand::Value(out))];
    // Dense convolutions with enough output channels to fill 64-row tiles go through the
    // implicit GEMM; grouped, depthwise and few-channel ones stay direct.
    let max = l.gpu_limits_per_dimension();
    if group == 1 && oc >= 16 {
        if kernel == CONV {
            let grid = [(n * oh * ow).div_ceil(64), oc.div_ceil(64), 1];
            if grid.iter().all(|&g| g <= max) {
                l.dispatch(CONV_TILED, params, bindings, grid.map(|g| g as u32));
                return Ok(());
            }
        } else if rw.dilations == [1, 1] {
            // One GEMM per output phase (grid z), x over the widest phase's columns.
            let (sh, sw) = (rw.strides[0], rw.strides[1]);
            let grid = [
                (n * oh.div_ceil(sh) * ow.div_ceil(sw)).div_ceil(64),
                oc.div_ceil(64),
                sh * sw,
            ];
            if grid.iter().all(|&g| g <= max) {
                l.dispatch(
                    CONV_TRANSPOSE_TILED,
                    params,
                    bindings,
                    grid.map(|g| g as u32),
                );
                return Ok(());
            }
        }
    }
    l.dispatch_flat(node, kernel, params, bindings, n_out)
}

fn check_groups(node: &Node, c: usize, oc: usize, group: usize) -> Result<()> {
    if group == 0 || !c.is_multiple_of(group) || !oc.is_multiple_of(group) {
        return Err(Error::node(
            node,
            format!("{c} input and {oc} output channels do not split into {group} groups"),
        ));
    }
    Ok(())
}

pub(super) fn conv(l: &mut Lowering, node: &Node, attrs: &Conv) -> Result<()> {
    let (n, c, hw, one_d) = image(node, &l.input_shape(node, 0)?)?;
    let ws = l.input_shape(node, 1)?;
    if ws.len() < 3 {
        return Err(Error::node(
            node,
            format!("weight shape {ws:?} is not a conv filter"),
        ));
    }
    let (oc, icg) = (ws[0], ws[1]);
    check_groups(node, c, oc, attrs.group)?;
    if icg * attrs.group != c {
        return Err(Error::node(
            node,
            format!(
                "the weights expect {} input channels, the input has {c}",
                icg * attrs.group
            ),
        ));
    }
    let (kernel, window): (Vec<usize>, Window) = spatial_2d(node, &ws[2..], &attrs.window, one_d)?;
    let rw = resolve_window(&window, &hw, &kernel, false)
        .map_err(|e| Error::node(node, e.to_string()))?;
    let out_hw = [rw.output[0], rw.output[1]];
    dispatch(
        l,
        node,
        CONV,
        (n, c, hw),
        (oc, out_hw),
        &rw,
        attrs.group,
        attrs.activation,
    )
}

pub(super) fn conv_transpose(l: &mut Lowering, node: &Node, attrs: &ConvTranspose) -> Result<()> {
    let (n, c, hw, one_d) = image(node, &l.input_shape(node, 0)?)?;
    let ws = l.input_shape(node, 1)?;
    if ws.len() < 3 || ws[0] != c {
        return Err(Error::node(
            node,
            format!("weight shape {ws:?} does not fit {c} input channels"),
        ));
    }
    let oc = ws[1] * attrs.group;
    check_groups(node, c, oc, attrs.group)?;
    let (kernel, window) = spatial_2d(node, &ws[2..], &attrs.window, one_d)?;
    let (opad, oshape) = if one_d {
        (
            attrs
                .output_padding
                .first()
                .map(|&p| vec![0, p])
                .unwrap_or_default(),
            attrs
                .output_shape
                .as_ref()
                .map(|s| vec![1, *s.last().unwrap_or(&1)]),
        )
    } else {
        (attrs.output_padding.clone(), attrs.output_shape.clone())
    };
    let rw = resolve_conv_transpose(&window, &hw, &kernel, &opad, oshape.as_deref())
        .map_err(|e| Error::node(node, e.to_string()))?;
    let out_hw = [rw.output[0], rw.output[1]];
    dispatch(
        l,
        node,
        CONV_TRANSPOSE,
        (n, c, hw),
        (oc, out_hw),
        &rw,
        attrs.group,
        attrs.activation,
    )
}

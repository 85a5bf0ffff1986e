//! ConvTranspose. Undilated layers use the sub-pixel decomposition: output pixels of one
//! phase (oy mod sh, ox mod sw) are a stride-1 convolution of the input with the taps of the
//! kernel that land on that phase, so each phase is one implicit GEMM over the padded input
//! (no im2col, no col2im) and a final pass interleaves the phases with bias and activation.
//! Dilated layers, and layers with fewer output channels than a GEMM tile has rows (where
//! the phases' GEMMs would be mostly padding), take GEMM + col2im: cols[(oc, ky, kx), pixel]
//! = W^T · X, then each column is scattered into the output window it came from.

use super::conv::copy_panel;
use super::gemm::{Blocking, Epilogue, ImplicitB, PackedA, gemm_fill_b, gemm_implicit};
use super::{Images, check_out_len, float_input, image_dims, image_shape, new_output, spatial_2d};
use crate::scratch::Scratch;
use accel_core::ir::{AutoPad, ConvTranspose, Node};
use accel_core::ops::{ResolvedWindow, resolve_conv_transpose};
use accel_core::{Error, Result, Tensor, TensorView};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

pub struct ConvTransposeKernel {
    attrs: ConvTranspose,
    in_channels: usize,
    out_channels_per_group: usize,
    kernel: Vec<usize>,
    /// Per group: W_g^T as [ocg * kh * kw, icg] (the col2im path).
    packed: Vec<PackedA>,
    /// The sub-pixel path's weights, when it serves this layer.
    phases: Option<Phases>,
    bias: Vec<f32>,
    /// The sub-pixel path's plan for the last input size seen.
    plan: Mutex<Option<Arc<PhasePlan>>>,
}

/// One output phase of one spatial axis: outputs o = s * i + phase take the kernel taps
/// `first + j * s` (j < taps) from input `i + shift - j`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Phase {
    first: usize,
    taps: usize,
    shift: usize,
}

/// The phases of an axis with this stride, kernel and leading pad.
fn axis_phases(stride: usize, kernel: usize, pad: usize) -> Vec<Phase> {
    (0..stride)
        .map(|p| {
            let first = (p + pad) % stride;
            Phase {
                first,
                taps: if first < kernel {
                    (kernel - first).div_ceil(stride)
                } else {
                    0
                },
                shift: (p + pad) / stride,
            }
        })
        .collect()
}

/// Sub-pixel weights: per group and phase (py, px), A = [ocg, icg * taps_y * taps_x] with
/// A[o][(ic, jy, jx)] = W[ic][o][first_y + jy * sh][first_x + jx * sw].
struct Phases {
    strides: [usize; 2],
    pads: [usize; 2],
    ys: Vec<Phase>,
    xs: Vec<Phase>,
    /// [group][py * sw + px]; None for a phase with no taps (its outputs are the bias).
    packed: Vec<Vec<Option<PackedA>>>,
}

impl ConvTransposeKernel {
    pub fn new(
        node: &Node,
        attrs: &ConvTranspose,
        w: &Tensor,
        b: Option<&Tensor>,
    ) -> Result<ConvTransposeKernel> {
        let wv = w
            .as_slice::<f32>()
            .map_err(|e| Error::node(node, e.to_string()))?;
        let ws = w.shape();
        if ws.len() < 3 || ws.len() > 4 {
            return Err(Error::node(
                node,
                format!("only 1-D and 2-D ConvTranspose is supported (weight shape {ws:?})"),
            ));
        }
        let g = attrs.group;
        let (ic, ocg) = (ws[0], ws[1]);
        if g == 0 || ic % g != 0 {
            return Err(Error::node(
                node,
                format!("{ic} input channels do not split into {g} groups"),
            ));
        }
        let icg = ic / g;
        let kernel = ws[2..].to_vec();
        if !attrs.window.kernel_shape.is_empty() && attrs.window.kernel_shape != kernel {
            return Err(Error::node(
                node,
                format!(
                    "kernel_shape {:?} does not match the weights' kernel {kernel:?}",
                    attrs.window.kernel_shape
                ),
            ));
        }
        let m = ocg * kernel.iter().product::<usize>();
        let phases = Phases::for_layer(wv, attrs, icg, ocg, &kernel);
        let packed = if phases.is_some() {
            vec![]
        } else {
            (0..g)
                .map(|gi| PackedA::pack(&wv[gi * icg * m..], m, icg, 1, m))
                .collect()
        };
        let bias = match b {
            Some(b) => b.to_f32_vec()?,
            None => vec![0.0; ocg * g],
        };
        if bias.len() != ocg * g {
            return Err(Error::node(
                node,
                format!(
                    "bias has {} values for {} output channels",
                    bias.len(),
                    ocg * g
                ),
            ));
        }
        Ok(ConvTransposeKernel {
            attrs: attrs.clone(),
            in_channels: ic,
            out_channels_per_group: ocg,
            kernel,
            packed,
            phases,
            bias,
            plan: Mutex::new(None),
        })
    }

    /// Holds the packed weights as f16 from now on.
    pub fn use_f16_weights(&mut self) {
        self.packed = self.packed.iter().map(PackedA::to_f16).collect();
        if let Some(ph) = &mut self.phases {
            for a in ph.packed.iter_mut().flatten().flatten() {
                *a = a.to_f16();
            }
        }
    }

    /// Bytes of weights this kernel holds.
    pub fn weight_bytes(&self) -> usize {
        let phases = self.phases.as_ref().map_or(0, |ph| {
            ph.packed
                .iter()
                .flatten()
                .flatten()
                .map(PackedA::bytes)
                .sum()
        });
        self.packed.iter().map(PackedA::bytes).sum::<usize>() + phases + self.bias.len() * 4
    }

    /// Output shape for an input of `x_shape`.
    pub fn output_shape(&self, node: &Node, x_shape: &[usize]) -> Result<Vec<usize>> {
        Ok(self.geometry(node, x_shape)?.0)
    }

    pub fn run(&self, node: &Node, x: TensorView) -> Result<Tensor> {
        let shape = self.output_shape(node, x.shape())?;
        new_output(node, shape, |out| self.run_into(node, x, out))
    }

    fn geometry(
        &self,
        node: &Node,
        x_shape: &[usize],
    ) -> Result<(Vec<usize>, ResolvedWindow, [usize; 2])> {
        let (n, c, in_hw, one_d) = image_dims(node, x_shape)?;
        if c != self.in_channels {
            return Err(Error::node(
                node,
                format!(
                    "input has {c} channels, the weights expect {}",
                    self.in_channels
                ),
            ));
        }
        let (kernel, window) = spatial_2d(node, &self.kernel, &self.attrs.window, one_d)?;
        let spatial = if one_d { 1 } else { 2 };
        let opad_len = self.attrs.output_padding.len();
        let oshape_len = self.attrs.output_shape.as_ref().map_or(spatial, Vec::len);
        if (opad_len != 0 && opad_len != spatial) || !(spatial..=spatial + 2).contains(&oshape_len)
        {
            return Err(Error::node(
                node,
                format!(
                    "output_padding {:?} / output_shape {:?} do not fit {spatial} spatial axis/axes",
                    self.attrs.output_padding, self.attrs.output_shape
                ),
            ));
        }
        let (opad, oshape) = if one_d {
            let op = if self.attrs.output_padding.is_empty() {
                vec![]
            } else {
                vec![0, self.attrs.output_padding[0]]
            };
            (
                op,
                self.attrs
                    .output_shape
                    .as_ref()
                    .map(|s| vec![1, *s.last().unwrap_or(&1)]),
            )
        } else {
            (
                self.attrs.output_padding.clone(),
                self.attrs.output_shape.clone(),
            )
        };
        let rw = resolve_conv_transpose(&window, &in_hw, &kernel, &opad, oshape.as_deref())
            .map_err(|e| Error::node(node, e.to_string()))?;
        let (oh, ow) = (rw.output[0], rw.output[1]);
        let oc = self.out_channels_per_group * self.attrs.group;
        Ok((
            image_shape(n, oc, [oh, ow], one_d),
            rw,
            [kernel[0], kernel[1]],
        ))
    }

    /// Writes the output into `out` (every element; its old contents do not matter).
    pub fn run_into(&self, node: &Node, x: TensorView, out: &mut [f32]) -> Result<()> {
        let (shape, rw, [kh, kw]) = self.geometry(node, x.shape())?;
        check_out_len(node, &shape, out)?;
        let Images {
            data: xv,
            n,
            c,
            hw: in_hw,
            ..
        } = float_input(node, &x)?;
        let (oh, ow) = (rw.output[0], rw.output[1]);
        let g = self.attrs.group;
        let (icg, ocg) = (self.in_channels / g, self.out_channels_per_group);
        let oc = ocg * g;
        let pixels = in_hw[0] * in_hw[1];
        if let Some(ph) = &self.phases {
            // Phases are only built for explicit pads, which a run resolves unchanged.
            if ph.strides != [rw.strides[0], rw.strides[1]]
                || ph.pads != [rw.pads_begin[0], rw.pads_begin[1]]
            {
                return Err(Error::node(
                    node,
                    format!(
                        "resolved strides {:?} / pads {:?} differ from the compiled {:?} / {:?}",
                        rw.strides, rw.pads_begin, ph.strides, ph.pads
                    ),
                ));
            }
            let plan = self.phase_plan(ph, in_hw, [oh, ow]);
            for b in 0..n {
                let xb = &xv[b * c * pixels..(b + 1) * c * pixels];
                let ob = &mut out[b * oc * oh * ow..(b + 1) * oc * oh * ow];
                self.run_phases(ph, &plan, xb, in_hw, [oh, ow], ob);
            }
            return Ok(());
        }
        // Every element of cols is written by the GEMM.
        let mut cols = Scratch::zeroed(ocg * kh * kw * pixels);
        for b in 0..n {
            for gi in 0..g {
                let xg = &xv[(b * c + gi * icg) * pixels..(b * c + (gi + 1) * icg) * pixels];
                // X's column panels are copied right before use instead of packing all of
                // X first: the same copy, but into a panel that is hot in L1.
                let nr = Blocking::active().nr;
                let fill =
                    |pj: usize, panel: &mut [f32]| copy_panel(xg, icg, pixels, pj, nr, panel);
                gemm_fill_b(
                    &self.packed[gi],
                    pixels,
                    &fill,
                    &mut cols,
                    pixels,
                    Epilogue::NONE,
                );
                let og =
                    &mut out[(b * oc + gi * ocg) * oh * ow..(b * oc + (gi + 1) * ocg) * oh * ow];
                og.par_chunks_mut(oh * ow)
                    .enumerate()
                    .for_each(|(o, plane)| {
                        plane.fill(self.bias[gi * ocg + o]);
                        col2im(
                            &cols[o * kh * kw * pixels..(o + 1) * kh * kw * pixels],
                            plane,
                            in_hw,
                            [oh, ow],
                            &rw,
                        );
                        if let Some(a) = self.attrs.activation {
                            super::activation::apply_slice(a, plane);
                        }
                    });
            }
        }
        Ok(())
    }
}

impl ConvTransposeKernel {
    /// The phase grid and implicit-B offsets for this input size, cached for the last size.
    fn phase_plan(&self, ph: &Phases, input: [usize; 2], output: [usize; 2]) -> Arc<PhasePlan> {
        let mut cached = self.plan.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = cached
            .as_ref()
            .filter(|p| p.input == input && p.output == output)
        {
            return p.clone();
        }
        let grid = PhaseGrid::new(ph, input, output);
        let icg = self.in_channels / self.attrs.group;
        let offsets = (0..ph.ys.len())
            .flat_map(|py| (0..ph.xs.len()).map(move |px| (py, px)))
            .map(|(py, px)| grid.offsets(ph, icg, py, px))
            .collect();
        let plan = Arc::new(PhasePlan {
            input,
            output,
            grid,
            offsets,
        });
        *cached = Some(plan.clone());
        plan
    }

    /// Every phase's implicit GEMM into a phase-major scratch buffer, then one pass that
    /// interleaves the phases into `out` with bias and activation.
    fn run_phases(
        &self,
        ph: &Phases,
        plan: &PhasePlan,
        x: &[f32],
        [ih, iw]: [usize; 2],
        [oh, ow]: [usize; 2],
        out: &mut [f32],
    ) {
        let g = self.attrs.group;
        let (icg, ocg) = (self.in_channels / g, self.out_channels_per_group);
        let [sh, sw] = ph.strides;
        let grid = &plan.grid;
        let [hp, wp] = grid.padded;
        // The input with the zero border every phase's taps need.
        let mut padded = Scratch::zeroed(g * icg * hp * wp);
        for c in 0..g * icg {
            for y in 0..ih {
                let dst = (c * hp + grid.lead[0] + y) * wp + grid.lead[1];
                padded[dst..dst + iw].copy_from_slice(&x[(c * ih + y) * iw..][..iw]);
            }
        }
        // Phase (py, px) of group gi: [ocg][rows_py][wp], at phase_at(gi, py, px).
        let phase_len = |py: usize| ocg * grid.rows[py] * wp;
        let group_len: usize = (0..sh).map(|py| phase_len(py) * sw).sum();
        let phase_at = |gi: usize, py: usize, px: usize| {
            gi * group_len + (0..py).map(|y| phase_len(y) * sw).sum::<usize>() + px * phase_len(py)
        };
        let mut phases = Scratch::zeroed(g * group_len);
        for gi in 0..g {
            let xg = &padded[gi * icg * hp * wp..(gi + 1) * icg * hp * wp];
            for py in 0..sh {
                for px in 0..sw {
                    let Some(a) = &ph.packed[gi][py * sw + px] else {
                        continue; // no taps: the phase's outputs are the bias alone
                    };
                    let offsets = &plan.offsets[py * sw + px];
                    // One row of the whole padded grid: columns past a phase row's width
                    // are computed and never read.
                    let n = grid.rows[py] * wp;
                    let b = ImplicitB::new(xg, offsets, 1, n, 0);
                    let at = phase_at(gi, py, px);
                    let c = &mut phases[at..at + phase_len(py)];
                    gemm_implicit(a, &b, c, n, Epilogue::NONE);
                }
            }
        }
        let act = self.attrs.activation;
        out.par_chunks_mut(oh * ow)
            .enumerate()
            .for_each(|(o, plane)| {
                let (gi, og) = (o / ocg, o % ocg);
                let bias = self.bias[o];
                for (oy, row) in plane.chunks_exact_mut(ow).enumerate() {
                    let (py, y) = (oy % sh, oy / sh);
                    for px in 0..sw.min(ow) {
                        let at = phase_at(gi, py, px) + (og * grid.rows[py] + y) * wp;
                        let src = &phases[at..at + grid.cols[px]];
                        interleave_into(row, src, px, sw, bias);
                    }
                    if let Some(a) = act {
                        super::activation::apply_slice(a, row);
                    }
                }
            });
    }
}

/// row[px + s * i] = src[i] + bias.
#[inline]
fn interleave_into(row: &mut [f32], src: &[f32], px: usize, s: usize, bias: f32) {
    if s == 1 {
        row.iter_mut().zip(src).for_each(|(o, &v)| *o = v + bias);
        return;
    }
    for (o, &v) in row[px..].iter_mut().step_by(s).zip(src) {
        *o = v + bias;
    }
}

/// What a run of one input size needs besides the weights.
struct PhasePlan {
    input: [usize; 2],
    output: [usize; 2],
    grid: PhaseGrid,
    /// Per phase (py * sw + px), the implicit B's row offsets.
    offsets: Vec<Vec<usize>>,
}

/// Sizes of a run's phases: output rows and columns per phase, and the padded input every
/// phase reads in place (its data starting at `lead`).
struct PhaseGrid {
    rows: Vec<usize>,
    cols: Vec<usize>,
    lead: [usize; 2],
    padded: [usize; 2],
}

impl PhaseGrid {
    fn new(ph: &Phases, input: [usize; 2], output: [usize; 2]) -> PhaseGrid {
        let axis = |phases: &[Phase], s: usize, i: usize, o: usize| {
            let counts: Vec<usize> = (0..s)
                .map(|p| if p < o { (o - p).div_ceil(s) } else { 0 })
                .collect();
            // Tap j of output q reads padded index q + shift - j + lead >= 0.
            let lead = phases
                .iter()
                .map(|p| p.taps.saturating_sub(1).saturating_sub(p.shift))
                .max()
                .unwrap_or(0);
            let span = phases
                .iter()
                .zip(&counts)
                .map(|(p, &n)| n + p.shift + lead)
                .max()
                .unwrap_or(0)
                .max(i + lead);
            (counts, lead, span)
        };
        let (rows, ly, hp) = axis(&ph.ys, ph.strides[0], input[0], output[0]);
        let (cols, lx, wp) = axis(&ph.xs, ph.strides[1], input[1], output[1]);
        PhaseGrid {
            rows,
            cols,
            lead: [ly, lx],
            padded: [hp, wp],
        }
    }

    /// Row offsets of phase (py, px)'s implicit B over one group's padded input: row
    /// (ic, jy, jx) reads input (y + shift_y - jy, x + shift_x - jx).
    fn offsets(&self, ph: &Phases, channels: usize, py: usize, px: usize) -> Vec<usize> {
        let (fy, fx) = (ph.ys[py], ph.xs[px]);
        let [hp, wp] = self.padded;
        let mut offsets = Vec::with_capacity(channels * fy.taps * fx.taps);
        for c in 0..channels {
            for jy in 0..fy.taps {
                for jx in 0..fx.taps {
                    let y = fy.shift + self.lead[0] - jy;
                    let x = fx.shift + self.lead[1] - jx;
                    offsets.push(c * hp * wp + y * wp + x);
                }
            }
        }
        offsets
    }
}

impl Phases {
    /// The sub-pixel weights of a 2-D (or lifted 1-D) undilated layer with at least as many
    /// output channels per group as a GEMM tile has rows.
    fn for_layer(
        w: &[f32],
        attrs: &ConvTranspose,
        icg: usize,
        ocg: usize,
        kernel: &[usize],
    ) -> Option<Phases> {
        let k2 = match kernel {
            [k] => [1, *k],
            [kh, kw] => [*kh, *kw],
            _ => return None,
        };
        let lift = |v: &[usize], fill: usize| -> Option<[usize; 2]> {
            match v {
                [] => Some([fill, fill]),
                [a] if kernel.len() == 1 => Some([fill, *a]),
                [a, b] if kernel.len() == 2 => Some([*a, *b]),
                _ => None,
            }
        };
        let window = &attrs.window;
        let strides = lift(&window.strides, 1)?;
        let dilations = lift(&window.dilations, 1)?;
        let pads = match (window.pads.as_slice(), kernel.len()) {
            ([], _) => [0, 0],
            ([b, _], 1) => [0, *b],
            ([t, l, _, _], 2) => [*t, *l],
            _ => return None,
        };
        // auto_pad and output_shape place the pads at run time; those layers keep col2im.
        let explicit = window.auto_pad == AutoPad::NotSet && attrs.output_shape.is_none();
        if !explicit || dilations != [1, 1] || strides.contains(&0) || ocg < Blocking::active().mr {
            return None;
        }
        let ys = axis_phases(strides[0], k2[0], pads[0]);
        let xs = axis_phases(strides[1], k2[1], pads[1]);
        let g = attrs.group;
        let [kh, kw] = k2;
        let packed = (0..g)
            .map(|gi| {
                let mut per_phase = Vec::with_capacity(ys.len() * xs.len());
                for fy in &ys {
                    for fx in &xs {
                        let k = icg * fy.taps * fx.taps;
                        if k == 0 {
                            per_phase.push(None);
                            continue;
                        }
                        let mut a = vec![0.0f32; ocg * k];
                        for o in 0..ocg {
                            let mut p = 0;
                            for ic in 0..icg {
                                let wbase = ((gi * icg + ic) * ocg + o) * kh * kw;
                                for jy in 0..fy.taps {
                                    for jx in 0..fx.taps {
                                        let (ky, kx) = (
                                            fy.first + jy * strides[0],
                                            fx.first + jx * strides[1],
                                        );
                                        a[o * k + p] = w[wbase + ky * kw + kx];
                                        p += 1;
                                    }
                                }
                            }
                        }
                        per_phase.push(Some(PackedA::pack(&a, ocg, k, k, 1)));
                    }
                }
                per_phase
            })
            .collect();
        Some(Phases {
            strides,
            pads,
            ys,
            xs,
            packed,
        })
    }
}

/// Adds cols[(ky, kx), (iy, ix)] into out[iy*sh - pt + ky*dh, ix*sw - pl + kx*dw].
fn col2im(
    cols: &[f32],
    out: &mut [f32],
    in_hw: [usize; 2],
    out_hw: [usize; 2],
    rw: &accel_core::ops::ResolvedWindow,
) {
    let (ih, iw) = (in_hw[0], in_hw[1]);
    let (oh, ow) = (out_hw[0] as isize, out_hw[1] as isize);
    let (kh, kw) = (rw.kernel[0], rw.kernel[1]);
    let (sh, sw) = (rw.strides[0] as isize, rw.strides[1] as isize);
    let (dh, dw) = (rw.dilations[0] as isize, rw.dilations[1] as isize);
    let (pt, pl) = (rw.pads_begin[0] as isize, rw.pads_begin[1] as isize);
    for ky in 0..kh {
        for kx in 0..kw {
            let src = &cols[(ky * kw + kx) * ih * iw..(ky * kw + kx + 1) * ih * iw];
            for iy in 0..ih {
                let oy = iy as isize * sh - pt + ky as isize * dh;
                if oy < 0 || oy >= oh {
                    continue;
                }
                let orow = &mut out[(oy * ow) as usize..((oy + 1) * ow) as usize];
                let srow = &src[iy * iw..(iy + 1) * iw];
                let off = kx as isize * dw - pl;
                for (ix, &v) in srow.iter().enumerate() {
                    let ox = ix as isize * sw + off;
                    if ox >= 0 && ox < ow {
                        orow[ox as usize] += v;
                    }
                }
            }
        }
    }
}

//! Plain reference implementations of the heavy operators, written straight from the ONNX
//! definitions (one output element at a time, f64 accumulation, no packing, no SIMD), for
//! checking the optimized CPU kernels. Slow on purpose; test-sized inputs only.

use accel_core::ir::{Activation, Direction};

/// [N, C, H, W] in row-major order.
pub struct Nchw<'a> {
    pub data: &'a [f32],
    pub shape: [usize; 4],
}

impl Nchw<'_> {
    fn at(&self, n: usize, c: usize, y: usize, x: usize) -> f32 {
        let [_, cs, hs, ws] = self.shape;
        self.data[((n * cs + c) * hs + y) * ws + x]
    }
}

fn act(a: Option<Activation>, v: f32) -> f32 {
    a.map_or(v, |a| a.apply(v))
}

/// Output length of a pooled or convolved axis, ONNX rules (ceil_mode drops a last window
/// that would start in the end padding).
pub fn out_len(
    input: usize,
    k: usize,
    s: usize,
    d: usize,
    pb: usize,
    pe: usize,
    ceil: bool,
) -> usize {
    let span = (k - 1) * d + 1;
    let room = input + pb + pe - span;
    let mut o = if ceil { room.div_ceil(s) } else { room / s } + 1;
    if ceil && (o - 1) * s >= input + pb {
        o -= 1;
    }
    o
}

pub struct ConvParams {
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    pub dilations: [usize; 2],
    /// top, left, bottom, right
    pub pads: [usize; 4],
    pub group: usize,
    pub activation: Option<Activation>,
}

/// Conv: w [OC, IC/group, kh, kw]. Returns the output and its shape.
pub fn conv(
    x: &Nchw,
    w: &[f32],
    bias: Option<&[f32]>,
    oc: usize,
    p: &ConvParams,
) -> (Vec<f32>, Vec<usize>) {
    let [n, c, h, wd] = x.shape;
    let (icg, ocg) = (c / p.group, oc / p.group);
    let [kh, kw] = p.kernel;
    let oh = out_len(
        h,
        kh,
        p.strides[0],
        p.dilations[0],
        p.pads[0],
        p.pads[2],
        false,
    );
    let ow = out_len(
        wd,
        kw,
        p.strides[1],
        p.dilations[1],
        p.pads[1],
        p.pads[3],
        false,
    );
    let mut out = Vec::with_capacity(n * oc * oh * ow);
    for b in 0..n {
        for o in 0..oc {
            let g = o / ocg;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = bias.map_or(0.0, |b| b[o] as f64);
                    for i in 0..icg {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * p.strides[0] + ky * p.dilations[0]) as isize
                                    - p.pads[0] as isize;
                                let ix = (ox * p.strides[1] + kx * p.dilations[1]) as isize
                                    - p.pads[1] as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let wv = w[((o * icg + i) * kh + ky) * kw + kx] as f64;
                                acc += wv * x.at(b, g * icg + i, iy as usize, ix as usize) as f64;
                            }
                        }
                    }
                    out.push(act(p.activation, acc as f32));
                }
            }
        }
    }
    (out, vec![n, oc, oh, ow])
}

/// ConvTranspose (dilation 1, no output_padding): w [IC, OC/group, kh, kw].
pub fn conv_transpose(
    x: &Nchw,
    w: &[f32],
    bias: Option<&[f32]>,
    ocg: usize,
    p: &ConvParams,
) -> (Vec<f32>, Vec<usize>) {
    let [n, c, h, wd] = x.shape;
    let icg = c / p.group;
    let oc = ocg * p.group;
    let [kh, kw] = p.kernel;
    let [dh, dw] = p.dilations;
    let oh = (h - 1) * p.strides[0] + (kh - 1) * dh + 1 - p.pads[0] - p.pads[2];
    let ow = (wd - 1) * p.strides[1] + (kw - 1) * dw + 1 - p.pads[1] - p.pads[3];
    let mut acc = vec![0.0f64; n * oc * oh * ow];
    for b in 0..n {
        for ic in 0..c {
            let g = ic / icg;
            for iy in 0..h {
                for ix in 0..wd {
                    let xv = x.at(b, ic, iy, ix) as f64;
                    for o in 0..ocg {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let oy =
                                    (iy * p.strides[0] + ky * dh) as isize - p.pads[0] as isize;
                                let ox =
                                    (ix * p.strides[1] + kx * dw) as isize - p.pads[1] as isize;
                                if oy < 0 || ox < 0 || oy >= oh as isize || ox >= ow as isize {
                                    continue;
                                }
                                let oc_g = g * ocg + o;
                                let wv = w[((ic * ocg + o) * kh + ky) * kw + kx] as f64;
                                acc[((b * oc + oc_g) * oh + oy as usize) * ow + ox as usize] +=
                                    xv * wv;
                            }
                        }
                    }
                }
            }
        }
    }
    let out = acc
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let o = (i / (oh * ow)) % oc;
            act(p.activation, (v + bias.map_or(0.0, |b| b[o] as f64)) as f32)
        })
        .collect();
    (out, vec![n, oc, oh, ow])
}

/// C [m, n] = A [m, k] · B (B [k, n], or [n, k] when `trans_b`).
pub fn matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize, trans_b: bool) -> Vec<f32> {
    let mut c = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f64;
            for p in 0..k {
                let bv = if trans_b { b[j * k + p] } else { b[p * n + j] };
                acc += a[i * k + p] as f64 * bv as f64;
            }
            c[i * n + j] = acc as f32;
        }
    }
    c
}

/// MaxPool / AveragePool.
pub fn pool(
    x: &Nchw,
    max: bool,
    p: &ConvParams,
    ceil: bool,
    count_include_pad: bool,
) -> (Vec<f32>, Vec<usize>) {
    let [n, c, h, w] = x.shape;
    let [kh, kw] = p.kernel;
    let oh = out_len(h, kh, p.strides[0], 1, p.pads[0], p.pads[2], ceil);
    let ow = out_len(w, kw, p.strides[1], 1, p.pads[1], p.pads[3], ceil);
    let mut out = Vec::with_capacity(n * c * oh * ow);
    for b in 0..n {
        for ch in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let (mut best, mut sum, mut count, mut padded) =
                        (f32::NEG_INFINITY, 0.0f64, 0, 0);
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * p.strides[0] + ky) as isize - p.pads[0] as isize;
                            let ix = (ox * p.strides[1] + kx) as isize - p.pads[1] as isize;
                            let in_padded =
                                iy < (h + p.pads[2]) as isize && ix < (w + p.pads[3]) as isize;
                            if in_padded {
                                padded += 1;
                            }
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                continue;
                            }
                            let v = x.at(b, ch, iy as usize, ix as usize);
                            best = best.max(v);
                            sum += v as f64;
                            count += 1;
                        }
                    }
                    out.push(if max {
                        best
                    } else {
                        (sum / if count_include_pad { padded } else { count } as f64) as f32
                    });
                }
            }
        }
    }
    (out, vec![n, c, oh, ow])
}

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

/// LSTM, layout 0, no clip, gates i, o, f, c. Returns Y [seq, dirs, batch, H], Y_h and Y_c
/// [dirs, batch, H].
#[allow(clippy::too_many_arguments)]
pub fn lstm(
    x: &[f32],
    seq: usize,
    batch: usize,
    input: usize,
    w: &[f32],
    r: &[f32],
    bias: &[f32],
    h: usize,
    direction: Direction,
) -> [Vec<f32>; 3] {
    let nd = direction.num_directions();
    let mut y = vec![0.0f32; seq * nd * batch * h];
    let (mut yh, mut yc) = (vec![0.0f32; nd * batch * h], vec![0.0f32; nd * batch * h]);
    for d in 0..nd {
        let reverse = direction == Direction::Reverse || d == 1;
        let (wd, rd, bd) = (
            &w[d * 4 * h * input..],
            &r[d * 4 * h * h..],
            &bias[d * 8 * h..],
        );
        for b in 0..batch {
            let (mut hs, mut cs) = (vec![0.0f64; h], vec![0.0f64; h]);
            for s in 0..seq {
                let t = if reverse { seq - 1 - s } else { s };
                let xt = &x[(t * batch + b) * input..][..input];
                let gate = |j: usize, hs: &[f64]| {
                    let mut g = bd[j] as f64 + bd[4 * h + j] as f64;
                    g += (0..input)
                        .map(|q| wd[j * input + q] as f64 * xt[q] as f64)
                        .sum::<f64>();
                    g += (0..h).map(|q| rd[j * h + q] as f64 * hs[q]).sum::<f64>();
                    g
                };
                let mut next = vec![0.0f64; h];
                for u in 0..h {
                    let i = sigmoid(gate(u, &hs));
                    let o = sigmoid(gate(h + u, &hs));
                    let f = sigmoid(gate(2 * h + u, &hs));
                    let c = gate(3 * h + u, &hs).tanh();
                    cs[u] = f * cs[u] + i * c;
                    next[u] = o * cs[u].tanh();
                }
                hs = next;
                for u in 0..h {
                    y[((t * nd + d) * batch + b) * h + u] = hs[u] as f32;
                }
            }
            for u in 0..h {
                yh[(d * batch + b) * h + u] = hs[u] as f32;
                yc[(d * batch + b) * h + u] = cs[u] as f32;
            }
        }
    }
    [y, yh, yc]
}

//! LSTM (ONNX gate order i, o, f, c): the input projection of every time step and direction
//! is one GEMM; the recurrence then adds R·h per step. Directions run in parallel.

use super::activation::{sigmoid_fast, tanh_fast};
use super::gemm::{Bias, Epilogue, PackedA, PackedB, gemm};
use super::{check_out_len, zeroed_output};
use crate::isa::{self, Isa};
use crate::scratch::{ALIGN_SLACK, Scratch};
use accel_core::ir::{Direction, Lstm, Node};
use accel_core::ops::transpose;
use accel_core::{Error, Result, Tensor, TensorView};

pub struct LstmKernel {
    attrs: Lstm,
    input_size: usize,
    /// Every direction's W^T side by side, packed as B: [input, dirs * 4H], so one GEMM
    /// projects every direction over all threads before the recurrences run side by side.
    w: PackedB,
    /// Wb + Rb per direction, [dirs * 4H].
    bias: Vec<f32>,
    /// Per direction: R for the per-step R·h, packed in column blocks (see
    /// `RecurrentWeights`).
    r: Vec<RecurrentWeights>,
}

fn f32_vec(node: &Node, t: &Tensor) -> Result<Vec<f32>> {
    t.as_slice::<f32>()
        .map(<[f32]>::to_vec)
        .map_err(|e| Error::node(node, e.to_string()))
}

impl LstmKernel {
    pub fn new(
        node: &Node,
        attrs: &Lstm,
        w: &Tensor,
        r: &Tensor,
        b: Option<&Tensor>,
    ) -> Result<LstmKernel> {
        let nd = attrs.direction.num_directions();
        let h = attrs.hidden_size;
        let (ws, rs) = (w.shape(), r.shape());
        if attrs.layout > 1 || h == 0 || h.checked_mul(8).is_none() {
            return Err(Error::node(
                node,
                format!("hidden_size {h} and layout {} are not valid", attrs.layout),
            ));
        }
        if ws.len() != 3 || ws[0] != nd || ws[1] != 4 * h || rs != [nd, 4 * h, h] {
            return Err(Error::node(
                node,
                format!("W {ws:?} / R {rs:?} do not fit {nd} direction(s) of hidden size {h}"),
            ));
        }
        let input = ws[2];
        let (wv, rv) = (f32_vec(node, w)?, f32_vec(node, r)?);
        let bv = match b {
            Some(b) if b.shape() == [nd, 8 * h] => f32_vec(node, b)?,
            Some(b) => {
                return Err(Error::node(
                    node,
                    format!("B has shape {:?}, expected [{nd}, {}]", b.shape(), 8 * h),
                ));
            }
            None => vec![0.0; nd * 8 * h],
        };
        // W is [dirs, 4H, input]: as [dirs * 4H, input] its transpose is every direction's
        // W^T side by side.
        let w = PackedB::pack(&wv, input, nd * 4 * h, 1, input);
        let bias = (0..nd)
            .flat_map(|d| {
                let bd = &bv[d * 8 * h..(d + 1) * 8 * h];
                (0..4 * h).map(move |j| bd[j] + bd[4 * h + j])
            })
            .collect();
        let r = (0..nd)
            .map(|d| RecurrentWeights::pack(&rv[d * 4 * h * h..(d + 1) * 4 * h * h], h))
            .collect();
        Ok(LstmKernel {
            attrs: attrs.clone(),
            input_size: input,
            w,
            bias,
            r,
        })
    }

    /// Holds the input weights W as f16 from now on (R stays f32: the recurrence is
    /// latency-bound and its error would compound over the steps).
    pub fn use_f16_weights(&mut self) {
        self.w = self.w.to_f16();
    }

    /// Bytes of weights this kernel holds.
    pub fn weight_bytes(&self) -> usize {
        self.w.bytes()
            + self.bias.len() * 4
            + self.r.iter().map(|r| r.data.len() * 4).sum::<usize>()
    }

    /// Shapes of Y, Y_h and Y_c for an X of `x_shape`.
    pub fn output_shapes(&self, node: &Node, x_shape: &[usize]) -> Result<[Vec<usize>; 3]> {
        if x_shape.len() != 3 || x_shape[2] != self.input_size {
            return Err(Error::node(
                node,
                format!(
                    "X has shape {x_shape:?}, expected [{}, {}]",
                    if self.attrs.layout == 1 {
                        "batch, seq"
                    } else {
                        "seq, batch"
                    },
                    self.input_size
                ),
            ));
        }
        let (h, nd) = (self.attrs.hidden_size, self.r.len());
        Ok(if self.attrs.layout == 1 {
            let (batch, seq) = (x_shape[0], x_shape[1]);
            [
                vec![batch, seq, nd, h],
                vec![batch, nd, h],
                vec![batch, nd, h],
            ]
        } else {
            let (seq, batch) = (x_shape[0], x_shape[1]);
            [
                vec![seq, nd, batch, h],
                vec![nd, batch, h],
                vec![nd, batch, h],
            ]
        })
    }

    /// Inputs after X: sequence_lens, initial_h, initial_c (each optional).
    pub fn run(
        &self,
        node: &Node,
        x: TensorView,
        seq_lens: Option<TensorView>,
        h0: Option<TensorView>,
        c0: Option<TensorView>,
    ) -> Result<Vec<Tensor>> {
        let shapes = self.output_shapes(node, x.shape())?;
        let mut bufs = shapes
            .iter()
            .map(|s| zeroed_output(node, s))
            .collect::<Result<Vec<_>>>()?;
        {
            let [y, yh, yc] = &mut bufs[..] else {
                unreachable!("three outputs")
            };
            self.run_into(node, x, seq_lens, h0, c0, [Some(y), Some(yh), Some(yc)])?;
        }
        shapes
            .into_iter()
            .zip(bufs)
            .map(|(s, b)| Tensor::from_vec(s, b))
            .collect()
    }

    /// Writes Y, Y_h and Y_c into the given buffers (every element); None skips an output.
    pub fn run_into(
        &self,
        node: &Node,
        x: TensorView,
        seq_lens: Option<TensorView>,
        h0: Option<TensorView>,
        c0: Option<TensorView>,
        outs: [Option<&mut [f32]>; 3],
    ) -> Result<()> {
        let shapes = self.output_shapes(node, x.shape())?;
        for (s, o) in shapes.iter().zip(&outs) {
            if let Some(o) = o {
                check_out_len(node, s, o)?;
            }
        }
        let layout1 = self.attrs.layout == 1;
        // Layout 1 ([batch, seq, ...]) is transposed to layout 0 and back around the kernel.
        let x_t;
        let x = if layout1 {
            x_t = transpose(&x.to_tensor(), &[1, 0, 2])?;
            x_t.view()
        } else {
            x
        };
        let xs = x.shape();
        let (seq, batch) = (xs[0], xs[1]);
        let h = self.attrs.hidden_size;
        let nd = self.r.len();
        let lens: Vec<usize> = match seq_lens {
            Some(t) => t
                .to_tensor()
                .to_i64_vec()?
                .iter()
                .map(|&l| (l.max(0) as usize).min(seq))
                .collect(),
            None => vec![seq; batch],
        };
        if lens.len() != batch {
            return Err(Error::node(
                node,
                format!("sequence_lens has {} entries for batch {batch}", lens.len()),
            ));
        }
        let state = |t: Option<TensorView>, what: &str| -> Result<Scratch> {
            let want = if layout1 {
                [batch, nd, h]
            } else {
                [nd, batch, h]
            };
            let mut s = Scratch::zeroed(nd * batch * h);
            match t {
                None => {}
                Some(t) if t.shape() == want => {
                    let v = t
                        .as_slice::<f32>()
                        .map_err(|e| Error::node(node, e.to_string()))?;
                    if layout1 {
                        let tt = transpose(&t.to_tensor(), &[1, 0, 2])?;
                        s.copy_from_slice(tt.as_slice::<f32>()?);
                    } else {
                        s.copy_from_slice(v);
                    }
                }
                Some(t) => {
                    return Err(Error::node(
                        node,
                        format!("{what} has shape {:?}, expected {want:?}", t.shape()),
                    ));
                }
            }
            Ok(s)
        };
        let (h0, c0) = (state(h0, "initial_h")?, state(c0, "initial_c")?);
        let xv = x
            .as_slice::<f32>()
            .map_err(|e| Error::node(node, e.to_string()))?;
        let xa = PackedA::pack_pooled(xv, seq * batch, self.input_size, self.input_size, 1);
        // Every step's gate pre-activations for every direction: [seq * batch, dirs * 4H].
        // The GEMM writes every value: no zeroing pass (356 KB for the CRNN's first BiLSTM).
        let mut proj_buf = Scratch::new();
        let proj = proj_buf.reset_for_overwrite(seq * batch * nd * 4 * h);
        gemm(
            &xa,
            &self.w,
            proj,
            nd * 4 * h,
            Epilogue {
                bias: Bias::Col(&self.bias),
                activation: None,
                residual: None,
            },
        );

        let run_dir = |d: usize| -> (Scratch, Scratch, Scratch) {
            let reverse = self.attrs.direction == Direction::Reverse || d == 1;
            // Steps past a sequence's length stay zero in Y.
            let mut y = Scratch::zeroed(seq * batch * h);
            let mut hs = Scratch::zeroed(batch * h);
            hs.copy_from_slice(&h0[d * batch * h..(d + 1) * batch * h]);
            let mut cs = Scratch::zeroed(batch * h);
            cs.copy_from_slice(&c0[d * batch * h..(d + 1) * batch * h]);
            let rec = Recurrence {
                attrs: &self.attrs,
                r: &self.r[d],
                proj: &proj[d * 4 * h..],
                proj_stride: nd * 4 * h,
                batch,
                lens: &lens,
                reverse,
            };
            rec.run(&mut y, &mut hs, &mut cs);
            (y, hs, cs)
        };
        let (r0, r1) = if nd == 2 {
            let (a, b) = rayon::join(|| run_dir(0), || run_dir(1));
            (a, Some(b))
        } else {
            (run_dir(0), None)
        };
        let results: Vec<&(Scratch, Scratch, Scratch)> =
            std::iter::once(&r0).chain(r1.as_ref()).collect();

        let [y_out, yh_out, yc_out] = outs;
        if layout1 {
            // Assembled in layout 0, then transposed into the caller's buffers.
            let mut y0 = Scratch::zeroed(seq * nd * batch * h);
            interleave_y(&results, seq, batch, h, &mut y0);
            let put = |buf: Option<&mut [f32]>,
                       data: &[f32],
                       shape: Vec<usize>,
                       perm: &[usize]|
             -> Result<()> {
                if let Some(buf) = buf {
                    let t = transpose(&Tensor::from_vec(shape, data.to_vec())?, perm)?;
                    buf.copy_from_slice(t.as_slice::<f32>()?);
                }
                Ok(())
            };
            put(y_out, &y0, vec![seq, nd, batch, h], &[2, 0, 1, 3])?;
            let yh: Vec<f32> = results.iter().flat_map(|r| r.1.iter().copied()).collect();
            let yc: Vec<f32> = results.iter().flat_map(|r| r.2.iter().copied()).collect();
            put(yh_out, &yh, vec![nd, batch, h], &[1, 0, 2])?;
            put(yc_out, &yc, vec![nd, batch, h], &[1, 0, 2])?;
            return Ok(());
        }
        // Y [seq, dirs, batch, H]; Y_h and Y_c [dirs, batch, H].
        if let Some(y) = y_out {
            interleave_y(&results, seq, batch, h, y);
        }
        for (buf, pick) in [(yh_out, 1), (yc_out, 2)] {
            if let Some(buf) = buf {
                for (d, r) in results.iter().enumerate() {
                    let src: &[f32] = if pick == 1 { &r.1 } else { &r.2 };
                    buf[d * batch * h..(d + 1) * batch * h].copy_from_slice(src);
                }
            }
        }
        Ok(())
    }
}

/// Y [seq, dirs, batch, H] from each direction's [seq, batch, H].
fn interleave_y(
    results: &[&(Scratch, Scratch, Scratch)],
    seq: usize,
    batch: usize,
    h: usize,
    y: &mut [f32],
) {
    let nd = results.len();
    for (d, (yd, _, _)) in results.iter().map(|r| (&r.0, &r.1, &r.2)).enumerate() {
        for t in 0..seq {
            let dst = (t * nd + d) * batch * h;
            y[dst..dst + batch * h].copy_from_slice(&yd[t * batch * h..(t + 1) * batch * h]);
        }
    }
}

/// The sequential part of one direction: gates = proj[t] + R·h, then the cell update.
struct Recurrence<'a> {
    attrs: &'a Lstm,
    r: &'a RecurrentWeights,
    /// This direction's projections: step t of batch element b at (t * batch + b) *
    /// `proj_stride`, 4H values.
    proj: &'a [f32],
    proj_stride: usize,
    batch: usize,
    lens: &'a [usize],
    reverse: bool,
}

impl Recurrence<'_> {
    fn run(&self, y: &mut [f32], hs: &mut [f32], cs: &mut [f32]) {
        match isa::active() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: Isa::Avx512 is only selected after runtime detection of avx512f, avx2
            // and fma.
            Isa::Avx512 => unsafe { self.run_avx512(y, hs, cs) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: Isa::Avx2Fma is only selected after runtime detection of avx2 and fma.
            Isa::Avx2Fma => unsafe { self.run_avx2(y, hs, cs) },
            _ => self.run_generic::<{ cfg!(target_arch = "aarch64") }>(y, hs, cs),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn run_avx2(&self, y: &mut [f32], hs: &mut [f32], cs: &mut [f32]) {
        self.run_generic::<true>(y, hs, cs)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn run_avx512(&self, y: &mut [f32], hs: &mut [f32], cs: &mut [f32]) {
        self.run_generic::<true>(y, hs, cs)
    }

    #[inline(always)]
    fn run_generic<const FMA: bool>(&self, y: &mut [f32], hs: &mut [f32], cs: &mut [f32]) {
        let h = self.attrs.hidden_size;
        let batch = self.batch;
        let mut gates = Scratch::zeroed(4 * h);
        for b in 0..batch {
            let (hb, cb) = (&mut hs[b * h..(b + 1) * h], &mut cs[b * h..(b + 1) * h]);
            for s in 0..self.lens[b] {
                let t = if self.reverse {
                    self.lens[b] - 1 - s
                } else {
                    s
                };
                let at = (t * batch + b) * self.proj_stride;
                gates.copy_from_slice(&self.proj[at..at + 4 * h]);
                self.r.add_product::<FMA>(&mut gates, hb);
                cell(self.attrs, &mut gates, hb, cb);
                y[(t * batch + b) * h..(t * batch + b + 1) * h].copy_from_slice(hb);
            }
        }
    }
}

/// Gate math for one step: `gates` holds i, o, f, c pre-activations; updates h and c. Each
/// loop runs over a contiguous slice so it vectorizes.
#[inline(always)]
fn cell(attrs: &Lstm, gates: &mut [f32], hb: &mut [f32], cb: &mut [f32]) {
    let h = hb.len();
    if let Some(clip) = attrs.clip {
        gates.iter_mut().for_each(|g| *g = g.clamp(-clip, clip));
    }
    let (ifo, c) = gates.split_at_mut(3 * h);
    ifo.iter_mut().for_each(|g| *g = sigmoid_fast(*g));
    c.iter_mut().for_each(|g| *g = tanh_fast(*g));
    let (i, rest) = ifo.split_at(h);
    let (o, f) = rest.split_at(h);
    if attrs.input_forget {
        for k in 0..h {
            cb[k] = (1.0 - i[k]) * cb[k] + i[k] * c[k];
        }
    } else {
        for k in 0..h {
            cb[k] = f[k] * cb[k] + i[k] * c[k];
        }
    }
    for k in 0..h {
        hb[k] = o[k] * tanh_fast(cb[k]);
    }
}

/// Columns of the gate vector one register block of `add_product` covers: 8 zmm or 8 ymm
/// accumulators, enough independent FMA chains to hide their latency.
fn recurrent_block() -> usize {
    match isa::active() {
        Isa::Avx512 => 128,
        _ => 64,
    }
}

/// R ([4H, H], row j = gate unit j) laid out as column blocks of the gate vector: block b
/// holds, for every hidden unit k, R[b*B .. b*B+B, k] contiguously, so the per-step product
/// streams it once with the accumulators in registers.
struct RecurrentWeights {
    hidden: usize,
    block: usize,
    data: Vec<f32>,
    /// Where the weights start in `data`: at a 64-byte boundary.
    offset: usize,
}

impl RecurrentWeights {
    fn pack(r: &[f32], hidden: usize) -> RecurrentWeights {
        let gates = 4 * hidden;
        let block = recurrent_block().min(gates);
        let blocks = gates.div_ceil(block);
        let len = blocks * hidden * block;
        let mut data = vec![0.0f32; len + ALIGN_SLACK];
        let offset = data.as_ptr().align_offset(64).min(ALIGN_SLACK);
        let w = &mut data[offset..offset + len];
        for b in 0..blocks {
            for k in 0..hidden {
                for j in 0..block.min(gates - b * block) {
                    w[(b * hidden + k) * block + j] = r[(b * block + j) * hidden + k];
                }
            }
        }
        RecurrentWeights {
            hidden,
            block,
            data,
            offset,
        }
    }

    /// gates += R·h.
    #[inline(always)]
    fn add_product<const FMA: bool>(&self, gates: &mut [f32], hb: &[f32]) {
        match self.block {
            128 => self.add_blocks::<128, FMA>(gates, hb),
            64 => self.add_blocks::<64, FMA>(gates, hb),
            _ => self.add_blocks_any::<FMA>(gates, hb),
        }
    }

    #[inline(always)]
    fn add_blocks<const B: usize, const FMA: bool>(&self, gates: &mut [f32], hb: &[f32]) {
        let h = self.hidden;
        for (gb, wb) in gates
            .chunks_mut(B)
            .zip(self.data[self.offset..].chunks_exact(h * B))
        {
            let mut acc = [0.0f32; B];
            for (&hk, w) in hb.iter().zip(wb.chunks_exact(B)) {
                for j in 0..B {
                    acc[j] = if FMA {
                        w[j].mul_add(hk, acc[j])
                    } else {
                        w[j] * hk + acc[j]
                    };
                }
            }
            gb.iter_mut().zip(&acc).for_each(|(g, a)| *g += a);
        }
    }

    /// Gate vectors shorter than one block (hidden sizes below 16 or 32).
    fn add_blocks_any<const FMA: bool>(&self, gates: &mut [f32], hb: &[f32]) {
        let b = self.block;
        for (&hk, w) in hb.iter().zip(self.data[self.offset..].chunks_exact(b)) {
            for (g, &r) in gates.iter_mut().zip(w) {
                *g = if FMA { r.mul_add(hk, *g) } else { r * hk + *g };
            }
        }
    }
}

// ConvTranspose over NCHW images, bias and activation fused. `conv_transpose`: a gather, each
// output value summing the input pixels whose window reaches it (oy = iy * SH + ky * DH - PT),
// so no two invocations write one value (grouped, dilated or few-channel layers).
// `conv_transpose_tiled`: one implicit GEMM per output phase.
//
// p = [n_out, N, C, H, W, OC, OH, OW, KH, KW, SH, SW, PT, PL, DH, DW, G, act, lo, hi]
// w: [C, OC / G, KH, KW]; bias: [OC].

@group(0) @binding(0) var<storage, read> p: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> w: array<T>;
@group(0) @binding(3) var<storage, read> bias: array<T>;
@group(0) @binding(4) var<storage, read_write> out: array<T>;

@compute @workgroup_size(256)
fn conv_transpose(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(wid, nwg, lid);
    if i >= p[0] {
        return;
    }
    let C = p[2]; let H = p[3]; let W = p[4]; let OC = p[5]; let OH = p[6]; let OW = p[7];
    let KH = p[8]; let KW = p[9]; let SH = i32(p[10]); let SW = i32(p[11]);
    let ox = i % OW;
    let oy = (i / OW) % OH;
    let oc = (i / (OW * OH)) % OC;
    let n = i / (OW * OH * OC);
    let icg = C / p[16];
    let ocg = OC / p[16];
    let g = oc / ocg;
    let o = oc % ocg;
    var acc = f32(bias[oc]);
    for (var ky = 0u; ky < KH; ky++) {
        let ny = i32(oy) + i32(p[12]) - i32(ky * p[14]);
        if ny < 0 || ny % SH != 0 || ny / SH >= i32(H) {
            continue;
        }
        let iy = u32(ny / SH);
        for (var kx = 0u; kx < KW; kx++) {
            let nx = i32(ox) + i32(p[13]) - i32(kx * p[15]);
            if nx < 0 || nx % SW != 0 || nx / SW >= i32(W) {
                continue;
            }
            let ix = u32(nx / SW);
            for (var ic = 0u; ic < icg; ic++) {
                let c = g * icg + ic;
                acc += f32(x[((n * C + c) * H + iy) * W + ix]) * f32(w[((c * ocg + o) * KH + ky) * KW + kx]);
            }
        }
    }
    out[i] = T(activate(acc, p[17], pf(18u), pf(19u)));
}

// Undilated one-group ConvTransposes as one implicit GEMM per output phase (tile.wgsl): the
// outputs (q * SH + py, r * SW + px) of phase (py, px) take taps ky = ky0 + ty * SH and
// kx = kx0 + tx * SW only, so out_phase[oc, (n, q, r)] = W_phase[oc, (ic, ty, tx)] ·
// X[(ic, ty, tx), (n, q, r)] with the input pixel (q + (py + PT - ky) / SH, ...). Grid z is
// the phase; x covers the widest phase's columns.

struct Phase {
    py: u32,
    px: u32,
    ky0: u32,
    kx0: u32,
    nty: u32,
    ntx: u32,
    rows: u32,
    cols: u32,
}

// The phase this workgroup computes (set first by the entry point).
var<private> phase: Phase;

fn phase_of(z: u32) -> Phase {
    let KH = p[8]; let KW = p[9]; let SH = p[10]; let SW = p[11];
    var f: Phase;
    f.py = z / SW;
    f.px = z % SW;
    f.ky0 = (f.py + p[12]) % SH;
    f.kx0 = (f.px + p[13]) % SW;
    f.nty = select(0u, (KH - f.ky0 + SH - 1u) / SH, f.ky0 < KH);
    f.ntx = select(0u, (KW - f.kx0 + SW - 1u) / SW, f.kx0 < KW);
    f.rows = select(0u, (p[6] - f.py + SH - 1u) / SH, f.py < p[6]);
    f.cols = select(0u, (p[7] - f.px + SW - 1u) / SW, f.px < p[7]);
    return f;
}

// The tap (ky, kx) and input channel of k = (ic, ty, tx) in this phase.
fn phase_tap(k: u32) -> vec3<u32> {
    let taps = phase.nty * phase.ntx;
    let t = k % taps;
    return vec3<u32>(k / taps, phase.ky0 + (t / phase.ntx) * p[10], phase.kx0 + (t % phase.ntx) * p[11]);
}

// A: W_phase[oc, k] from the weights [C, OC, KH, KW].
fn tile_a(oc: u32, k: u32) -> f32 {
    let t = phase_tap(k);
    return f32(w[((t.x * p[5] + oc) * p[8] + t.y) * p[9] + t.z]);
}

// B: the input pixel tap k brings to output column col = (n, q, r) of this phase.
fn tile_b(k: u32, col: u32) -> f32 {
    let C = p[2]; let H = p[3]; let W = p[4]; let SH = p[10]; let SW = p[11];
    let t = phase_tap(k);
    let pixels = phase.rows * phase.cols;
    let img = col / pixels;
    let q = (col % pixels) / phase.cols;
    let r = col % phase.cols;
    // oy + PT - ky = q * SH + py + PT - ky, a multiple of SH by the phase.
    let iy = (i32(q * SH + phase.py + p[12]) - i32(t.y)) / i32(SH);
    let ix = (i32(r * SW + phase.px + p[13]) - i32(t.z)) / i32(SW);
    if iy < 0 || iy >= i32(H) || ix < 0 || ix >= i32(W) {
        return 0.0;
    }
    return f32(x[((img * C + t.x) * H + u32(iy)) * W + u32(ix)]);
}

fn tile_store(oc: u32, col: u32, v: f32) {
    let pixels = phase.rows * phase.cols;
    let img = col / pixels;
    let oy = ((col % pixels) / phase.cols) * p[10] + phase.py;
    let ox = (col % phase.cols) * p[11] + phase.px;
    let y = activate(v + f32(bias[oc]), p[17], pf(18u), pf(19u));
    out[((img * p[5] + oc) * p[6] + oy) * p[7] + ox] = T(y);
}

@compute @workgroup_size(256)
fn conv_transpose_tiled(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(local_invocation_index) li: u32) {
    phase = phase_of(wid.z);
    let K = p[2] * phase.nty * phase.ntx;
    let cols = p[1] * phase.rows * phase.cols;
    if wid.x * BN >= cols {
        return;
    }
    tiled_gemm(li, wid.y * BM, wid.x * BN, p[5], K, cols);
}

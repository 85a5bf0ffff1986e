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
    ky0: u32,
    kx0: u32,
    nty: u32,
    ntx: u32,
    rows: u32,
    cols: u32,
}

fn phase_of(z: u32) -> Phase {
    let KH = p[8]; let KW = p[9]; let SH = p[10]; let SW = p[11];
    let py = z / SW;
    let px = z % SW;
    var f: Phase;
    f.ky0 = (py + p[12]) % SH;
    f.kx0 = (px + p[13]) % SW;
    f.nty = select(0u, (KH - f.ky0 + SH - 1u) / SH, f.ky0 < KH);
    f.ntx = select(0u, (KW - f.kx0 + SW - 1u) / SW, f.kx0 < KW);
    f.rows = select(0u, (p[6] - py + SH - 1u) / SH, py < p[6]);
    f.cols = select(0u, (p[7] - px + SW - 1u) / SW, px < p[7]);
    return f;
}

@compute @workgroup_size(256)
fn conv_transpose_tiled(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(local_invocation_index) li: u32) {
    let C = p[2]; let H = p[3]; let W = p[4]; let OC = p[5]; let OH = p[6]; let OW = p[7];
    let KH = p[8]; let KW = p[9]; let SH = p[10]; let SW = p[11];
    let py = wid.z / SW;
    let px = wid.z % SW;
    let f = phase_of(wid.z);
    let taps = f.nty * f.ntx;
    let K = C * taps;
    let pixels = f.rows * f.cols;
    let cols = p[1] * pixels;
    let m0 = wid.y * BM;
    let n0 = wid.x * BN;
    if n0 >= cols {
        return;
    }
    let tm = li / 16u;
    let tn = li % 16u;
    var acc: array<array<f32, 4>, 4>;
    for (var k0 = 0u; k0 < K; k0 += BK) {
        for (var r = 0u; r < 4u; r++) {
            let idx = li + 256u * r;
            let m = idx / BK;
            let kw = idx % BK;
            var wv = 0.0;
            if m0 + m < OC && k0 + kw < K {
                let k = k0 + kw;
                let ic = k / taps;
                let ky = f.ky0 + ((k % taps) / f.ntx) * SH;
                let kx = f.kx0 + (k % f.ntx) * SW;
                wv = f32(w[((ic * OC + m0 + m) * KH + ky) * KW + kx]);
            }
            tile_w[kw][m] = wv;
            let kr = idx / BN;
            let n = idx % BN;
            var xv = 0.0;
            if k0 + kr < K && n0 + n < cols {
                let k = k0 + kr;
                let ic = k / taps;
                let ky = f.ky0 + ((k % taps) / f.ntx) * SH;
                let kx = f.kx0 + (k % f.ntx) * SW;
                let col = n0 + n;
                let img = col / pixels;
                let q = (col % pixels) / f.cols;
                let rr = col % f.cols;
                // oy + PT - ky = (q * SH + py + PT - ky), a multiple of SH by the phase.
                let iy = (i32(q * SH + py + p[12]) - i32(ky)) / i32(SH);
                let ix = (i32(rr * SW + px + p[13]) - i32(kx)) / i32(SW);
                if iy >= 0 && iy < i32(H) && ix >= 0 && ix < i32(W) {
                    xv = f32(x[((img * C + ic) * H + u32(iy)) * W + u32(ix)]);
                }
            }
            tile_x[kr][n] = xv;
        }
        workgroupBarrier();
        accumulate_tiles(tm, tn, &acc);
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let oc = m0 + tm * 4u + i;
        if oc >= OC {
            continue;
        }
        let bv = f32(bias[oc]);
        for (var j = 0u; j < 4u; j++) {
            let col = n0 + tn * 4u + j;
            if col >= cols {
                continue;
            }
            let img = col / pixels;
            let oy = ((col % pixels) / f.cols) * SH + py;
            let ox = (col % f.cols) * SW + px;
            let v = activate(acc[i][j] + bv, p[17], pf(18u), pf(19u));
            out[((img * OC + oc) * OH + oy) * OW + ox] = T(v);
        }
    }
}

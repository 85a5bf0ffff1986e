// Convolution over NCHW images (1-D convolutions come as height 1), bias and activation
// fused. `conv`: direct, one output value per invocation, the window's taps clipped to the
// input (grouped and depthwise convs). `conv_tiled`: dense convs as an implicit GEMM.
//
// p = [n_out, N, C, H, W, OC, OH, OW, KH, KW, SH, SW, PT, PL, DH, DW, G, act, lo, hi]
// w: [OC, C / G, KH, KW]; bias: [OC].

@group(0) @binding(0) var<storage, read> p: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> w: array<T>;
@group(0) @binding(3) var<storage, read> bias: array<T>;
@group(0) @binding(4) var<storage, read_write> out: array<T>;

@compute @workgroup_size(256)
fn conv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(wid, nwg, lid);
    if i >= p[0] {
        return;
    }
    let C = p[2]; let H = p[3]; let W = p[4]; let OC = p[5]; let OH = p[6]; let OW = p[7];
    let KH = p[8]; let KW = p[9];
    let ox = i % OW;
    let oy = (i / OW) % OH;
    let oc = (i / (OW * OH)) % OC;
    let n = i / (OW * OH * OC);
    let icg = C / p[16];
    let ocg = OC / p[16];
    let g = oc / ocg;
    let y0 = i32(oy * p[10]) - i32(p[12]);
    let x0 = i32(ox * p[11]) - i32(p[13]);
    var acc = f32(bias[oc]);
    for (var ic = 0u; ic < icg; ic++) {
        let xb = (n * C + g * icg + ic) * H * W;
        let wb = (oc * icg + ic) * KH * KW;
        for (var ky = 0u; ky < KH; ky++) {
            let iy = y0 + i32(ky * p[14]);
            if iy < 0 || iy >= i32(H) {
                continue;
            }
            for (var kx = 0u; kx < KW; kx++) {
                let ix = x0 + i32(kx * p[15]);
                if ix < 0 || ix >= i32(W) {
                    continue;
                }
                acc += f32(x[xb + u32(iy) * W + u32(ix)]) * f32(w[wb + ky * KW + kx]);
            }
        }
    }
    out[i] = T(activate(acc, p[17], pf(18u), pf(19u)));
}

// Dense convolutions (one group) as an implicit GEMM (tile.wgsl): out[oc, (n, pixel)] =
// W[oc, k] · X_col[k, (n, pixel)] with k = (ic, ky, kx), the input columns gathered while
// they are staged.

// A: the weights [OC, C * KH * KW].
fn tile_a(m: u32, k: u32) -> f32 {
    return f32(w[m * p[2] * p[8] * p[9] + k]);
}

// B: X_col[k, col], zero outside the image.
fn tile_b(k: u32, col: u32) -> f32 {
    let C = p[2]; let H = p[3]; let W = p[4]; let OH = p[6]; let OW = p[7];
    let KH = p[8]; let KW = p[9];
    let taps = KH * KW;
    let ic = k / taps;
    let ky = (k % taps) / KW;
    let kx = k % KW;
    let pixels = OH * OW;
    let n = col / pixels;
    let pix = col % pixels;
    let iy = i32((pix / OW) * p[10] + ky * p[14]) - i32(p[12]);
    let ix = i32((pix % OW) * p[11] + kx * p[15]) - i32(p[13]);
    if iy < 0 || iy >= i32(H) || ix < 0 || ix >= i32(W) {
        return 0.0;
    }
    return f32(x[((n * C + ic) * H + u32(iy)) * W + u32(ix)]);
}

fn tile_store(oc: u32, col: u32, v: f32) {
    let pixels = p[6] * p[7];
    let n = col / pixels;
    let y = activate(v + f32(bias[oc]), p[17], pf(18u), pf(19u));
    out[(n * p[5] + oc) * pixels + col % pixels] = T(y);
}

@compute @workgroup_size(256)
fn conv_tiled(@builtin(workgroup_id) wid: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    let K = p[2] * p[8] * p[9];
    let cols = p[1] * p[6] * p[7];
    tiled_gemm(li, wid.y * BM, wid.x * BN, p[5], K, cols);
}

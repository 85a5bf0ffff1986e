// Convolution over NCHW images (1-D convolutions come as height 1), direct: one output value
// per invocation, the window's taps clipped to the input, bias and activation fused.
//
// p = [n_out, N, C, H, W, OC, OH, OW, KH, KW, SH, SW, PT, PL, DH, DW, G, act, lo, hi]
// w: [OC, C / G, KH, KW]; bias: [OC].

@group(0) @binding(0) var<storage, read> p: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

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
    var acc = bias[oc];
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
                acc += x[xb + u32(iy) * W + u32(ix)] * w[wb + ky * KW + kx];
            }
        }
    }
    out[i] = activate(acc, p[17], pf(18u), pf(19u));
}

// ConvTranspose over NCHW images, as a gather: each output value sums the input pixels whose
// window reaches it (oy = iy * SH + ky * DH - PT), so no two invocations write one value.
//
// p = [n_out, N, C, H, W, OC, OH, OW, KH, KW, SH, SW, PT, PL, DH, DW, G, act, lo, hi]
// w: [C, OC / G, KH, KW]; bias: [OC].

@group(0) @binding(0) var<storage, read> p: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

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
    var acc = bias[oc];
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
                acc += x[((n * C + c) * H + iy) * W + ix] * w[((c * ocg + o) * KH + ky) * KW + kx];
            }
        }
    }
    out[i] = activate(acc, p[17], pf(18u), pf(19u));
}

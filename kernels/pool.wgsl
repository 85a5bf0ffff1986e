// Max and average pooling over NCHW planes, one output value per invocation.
//
// p = [n_out, NC, H, W, OH, OW, KH, KW, SH, SW, PT, PL, DH, DW, kind (0 max, 1 average),
//      count_include_pad, PB, PR]

@group(0) @binding(0) var<storage, read> p: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;

@compute @workgroup_size(256)
fn pool(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(wid, nwg, lid);
    if i >= p[0] {
        return;
    }
    let H = i32(p[2]); let W = i32(p[3]); let OH = p[4]; let OW = p[5];
    let ox = i % OW;
    let oy = (i / OW) % OH;
    let plane = i / (OW * OH);
    let y0 = i32(oy * p[8]) - i32(p[10]);
    let x0 = i32(ox * p[9]) - i32(p[11]);
    let average = p[14] == 1u;
    var best = -3.40282347e38;
    var sum = 0.0;
    var valid = 0u;
    var padded = 0u;
    for (var ky = 0u; ky < p[6]; ky++) {
        let iy = y0 + i32(ky * p[12]);
        for (var kx = 0u; kx < p[7]; kx++) {
            let ix = x0 + i32(kx * p[13]);
            // Positions inside the padded input count for count_include_pad.
            if iy < H + i32(p[16]) && ix < W + i32(p[17]) {
                padded++;
            }
            if iy < 0 || iy >= H || ix < 0 || ix >= W {
                continue;
            }
            let v = f32(x[plane * u32(H * W) + u32(iy * W + ix)]);
            best = max(best, v);
            sum += v;
            valid++;
        }
    }
    if average {
        let count = select(valid, padded, p[15] == 1u);
        out[i] = T(sum / f32(max(count, 1u)));
    } else {
        out[i] = T(best);
    }
}

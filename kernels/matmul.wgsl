// Batched matrix product with broadcasting batches, strided operands (so transposed A or B
// cost nothing) and a fused epilogue: out = act(alpha * A·B + beta * C).
// 16x16 output tiles per workgroup, the K loop staged through workgroup memory.
//
// p = [M, N, K, 0, batch_dims[4], a_batch_strides[4], b_batch_strides[4], c_batch_strides[4],
//      a_rs, a_cs, b_rs, b_cs, act, lo, hi, has_c, c_rs, c_cs, alpha, beta]
// Batch z of the grid is the flat index over batch_dims; out is [batches, M, N].

@group(0) @binding(0) var<storage, read> p: array<u32>;
@group(0) @binding(1) var<storage, read> a: array<T>;
@group(0) @binding(2) var<storage, read> b: array<T>;
@group(0) @binding(3) var<storage, read> c: array<T>;
@group(0) @binding(4) var<storage, read_write> out: array<T>;

const TILE: u32 = 16u;
var<workgroup> ta: array<array<f32, 16>, 16>;
var<workgroup> tb: array<array<f32, 16>, 16>;

@compute @workgroup_size(16, 16)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let M = p[0]; let N = p[1]; let K = p[2];
    let row = wid.y * TILE + lid.y;
    let col = wid.x * TILE + lid.x;
    var rest = wid.z;
    var ao = 0u; var bo = 0u; var co = 0u;
    for (var d = 3i; d >= 0; d--) {
        let dim = p[4u + u32(d)];
        let idx = rest % dim;
        rest = rest / dim;
        ao += idx * p[8u + u32(d)];
        bo += idx * p[12u + u32(d)];
        co += idx * p[16u + u32(d)];
    }
    let a_rs = p[20]; let a_cs = p[21]; let b_rs = p[22]; let b_cs = p[23];
    var acc = 0.0;
    for (var k0 = 0u; k0 < K; k0 += TILE) {
        let ka = k0 + lid.x;
        var va = 0.0;
        if row < M && ka < K {
            va = f32(a[ao + row * a_rs + ka * a_cs]);
        }
        ta[lid.y][lid.x] = va;
        let kb = k0 + lid.y;
        var vb = 0.0;
        if kb < K && col < N {
            vb = f32(b[bo + kb * b_rs + col * b_cs]);
        }
        tb[lid.y][lid.x] = vb;
        workgroupBarrier();
        for (var kk = 0u; kk < TILE; kk++) {
            acc += ta[lid.y][kk] * tb[kk][lid.x];
        }
        workgroupBarrier();
    }
    if row < M && col < N {
        var v = pf(30u) * acc;
        if p[27] == 1u {
            v += pf(31u) * f32(c[co + row * p[28] + col * p[29]]);
        }
        out[(wid.z * M + row) * N + col] = T(activate(v, p[24], pf(25u), pf(26u)));
    }
}

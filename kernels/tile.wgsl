// The tiled GEMM shared by the implicit-GEMM kernels (prepended to conv.wgsl and
// conv_transpose.wgsl): out[m, col] = sum_k A[m, k] · B[k, col] over a 64x64 output tile per
// workgroup of 256, each invocation a 4x4 block (rows tm*4.., columns tn*4.., tm and tn its
// index / and % 16), K staged 16 at a time through workgroup memory. The including file
// defines where the operands come from and where results go:
//   fn tile_a(m: u32, k: u32) -> f32        A, read for m < M and k < K
//   fn tile_b(k: u32, col: u32) -> f32      B, read for k < K and col < cols
//   fn tile_store(m: u32, col: u32, v: f32) for m < M and col < cols

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;
var<workgroup> tile_w: array<array<f32, 64>, 16>;
var<workgroup> tile_x: array<array<f32, 64>, 16>;

// The tile at (m0, n0) of an M x cols product over K, for invocation `li` of the workgroup.
// K, M and cols must be uniform across the workgroup (the barriers).
fn tiled_gemm(li: u32, m0: u32, n0: u32, M: u32, K: u32, cols: u32) {
    let tm = li / 16u;
    let tn = li % 16u;
    var acc: array<array<f32, 4>, 4>;
    for (var k0 = 0u; k0 < K; k0 += BK) {
        for (var r = 0u; r < 4u; r++) {
            let idx = li + 256u * r;
            // A: consecutive invocations read consecutive k of a row.
            let m = idx / BK;
            let ka = idx % BK;
            var av = 0.0;
            if m0 + m < M && k0 + ka < K {
                av = tile_a(m0 + m, k0 + ka);
            }
            tile_w[ka][m] = av;
            // B: consecutive invocations read consecutive columns (pixels).
            let kb = idx / BN;
            let n = idx % BN;
            var bv = 0.0;
            if k0 + kb < K && n0 + n < cols {
                bv = tile_b(k0 + kb, n0 + n);
            }
            tile_x[kb][n] = bv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            var a: array<f32, 4>;
            var b: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                a[i] = tile_w[kk][tm * 4u + i];
                b[i] = tile_x[kk][tn * 4u + i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i][j] += a[i] * b[j];
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let m = m0 + tm * 4u + i;
        for (var j = 0u; j < 4u; j++) {
            let col = n0 + tn * 4u + j;
            if m < M && col < cols {
                tile_store(m, col, acc[i][j]);
            }
        }
    }
}

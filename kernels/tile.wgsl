// The tiled GEMM core shared by the implicit-GEMM kernels (prepended to conv.wgsl and
// conv_transpose.wgsl): a workgroup of 256 computes a 64x64 output tile, each invocation a
// 4x4 block (rows tm*4.., columns tn*4.., tm and tn its index / and % 16). The kernel stages
// 16 values of K at a time into tile_w ([k][row]) and tile_x ([k][column]).

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;
var<workgroup> tile_w: array<array<f32, 64>, 16>;
var<workgroup> tile_x: array<array<f32, 64>, 16>;

// acc += the staged tiles' product for this invocation's block.
fn accumulate_tiles(tm: u32, tn: u32, acc: ptr<function, array<array<f32, 4>, 4>>) {
    for (var kk = 0u; kk < BK; kk++) {
        var a: array<f32, 4>;
        var b: array<f32, 4>;
        for (var i = 0u; i < 4u; i++) {
            a[i] = tile_w[kk][tm * 4u + i];
            b[i] = tile_x[kk][tn * 4u + i];
        }
        for (var i = 0u; i < 4u; i++) {
            for (var j = 0u; j < 4u; j++) {
                (*acc)[i][j] += a[i] * b[j];
            }
        }
    }
}

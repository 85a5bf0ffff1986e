// Layout kernels: one strided copy serves Transpose (permuted source strides), Slice (a
// source offset and stepped, possibly negative, strides) and each input of a Concat (an
// offset and strides into the output).
//
// p = [n, src_offset, dst_offset, 0, dims[6], src_strides[6] (i32), dst_strides[6] (i32)],
// dims of rank 6 padded with leading ones.

@group(0) @binding(0) var<storage, read> p: array<u32>;
@group(0) @binding(1) var<storage, read> src: array<T>;
@group(0) @binding(2) var<storage, read_write> dst: array<T>;

@compute @workgroup_size(256)
fn copy_strided(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(wid, nwg, lid);
    if i >= p[0] {
        return;
    }
    var rest = i;
    var s = pi(1u);
    var d = pi(2u);
    for (var k = 5i; k >= 0; k--) {
        let dim = p[4u + u32(k)];
        let idx = i32(rest % dim);
        rest = rest / dim;
        s += idx * pi(10u + u32(k));
        d += idx * pi(16u + u32(k));
    }
    dst[u32(d)] = src[u32(s)];
}

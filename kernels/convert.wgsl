// Precision boundary of a mixed program (f32 layers first, then f16 ones): an f32 value
// read by an f16 node is narrowed once. Built with T = f16.
//
// p = [n]

@group(0) @binding(0) var<storage, read> p: array<u32>;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<T>;

@compute @workgroup_size(256)
fn to_half(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(wid, nwg, lid);
    if i < p[0] {
        dst[i] = T(src[i]);
    }
}

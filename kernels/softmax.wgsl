// Softmax and LogSoftmax along one axis, one row per invocation: the tensor as
// [outer, n, inner], row r = (r / inner, r % inner), its values inner apart.
//
// p = [rows, n, inner, log]

@group(0) @binding(0) var<storage, read> p: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;

@compute @workgroup_size(256)
fn softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = flat_index(wid, nwg, lid);
    if r >= p[0] {
        return;
    }
    let n = p[1]; let inner = p[2];
    let base = (r / inner) * n * inner + r % inner;
    var m = -3.40282347e38;
    for (var k = 0u; k < n; k++) {
        m = max(m, f32(x[base + k * inner]));
    }
    var s = 0.0;
    for (var k = 0u; k < n; k++) {
        s += exp(f32(x[base + k * inner]) - m);
    }
    let log_s = log(s);
    for (var k = 0u; k < n; k++) {
        let z = f32(x[base + k * inner]) - m;
        out[base + k * inner] = T(select(exp(z) / s, z - log_s, p[3] == 1u));
    }
}

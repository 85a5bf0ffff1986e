// Elementwise kernels, one output value per invocation.
//
// unary:  p = [n, code, lo, hi]; out[i] = f(x[i]).
// binary: p = [n, rank, op, 0, dims[6], a_strides[6], b_strides[6]]; out[i] = a op b with
//         numpy broadcasting expressed as strides (0 along broadcast axes), dims of rank 6
//         padded with leading ones.

@group(0) @binding(0) var<storage, read> p: array<u32>;
@group(0) @binding(1) var<storage, read> a: array<T>;
@group(0) @binding(2) var<storage, read> b: array<T>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;

// Unary codes past the activations: 16 exp, 17 log, 18 neg, 19 abs, 20 sqrt, 21 reciprocal,
// 22 floor, 23 ceil.
fn unary_op(x: f32, code: u32, lo: f32, hi: f32) -> f32 {
    switch code {
        case 16u: { return exp(x); }
        case 17u: { return log(x); }
        case 18u: { return -x; }
        case 19u: { return abs(x); }
        case 20u: { return sqrt(x); }
        case 21u: { return 1.0 / x; }
        case 22u: { return floor(x); }
        case 23u: { return ceil(x); }
        default: { return activate(x, code, lo, hi); }
    }
}

@compute @workgroup_size(256)
fn unary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(wid, nwg, lid);
    if i >= p[0] {
        return;
    }
    out[i] = T(unary_op(f32(a[i]), p[1], pf(2u), pf(3u)));
}

// Binary codes: 0 add, 1 sub, 2 mul, 3 div, 4 pow, 5 max, 6 min.
fn binary_op(x: f32, y: f32, op: u32) -> f32 {
    switch op {
        case 0u: { return x + y; }
        case 1u: { return x - y; }
        case 2u: { return x * y; }
        case 3u: { return x / y; }
        case 4u: { return pow(x, y); }
        case 5u: { return max(x, y); }
        default: { return min(x, y); }
    }
}

@compute @workgroup_size(256)
fn binary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(wid, nwg, lid);
    if i >= p[0] {
        return;
    }
    var rest = i;
    var ia = 0u;
    var ib = 0u;
    for (var d = 5i; d >= 0; d--) {
        let dim = p[4u + u32(d)];
        let idx = rest % dim;
        rest = rest / dim;
        ia += idx * p[10u + u32(d)];
        ib += idx * p[16u + u32(d)];
    }
    out[i] = T(binary_op(f32(a[ia]), f32(b[ib]), p[2]));
}

// Shared by every kernel family (prepended to each file): the flat invocation index of a
// 2-D grid of 256-wide workgroups, parameter access and the fused activations.
//
// Every family binds its parameters at binding 0 as an array of u32 (`p`); f32 parameters
// are stored as their bits. Tensors are arrays of `T`, which the host defines before this
// file as f32 or (with `enable f16;`) f16: kernels load them as f32, compute and accumulate
// in f32, and store T.

const WG: u32 = 256u;

// Grids wider than 65535 workgroups wrap into y (the per-dimension limit).
fn flat_index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid.x;
}

fn pf(i: u32) -> f32 {
    return bitcast<f32>(p[i]);
}

fn pi(i: u32) -> i32 {
    return bitcast<i32>(p[i]);
}

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

// tanh from exp(-2|x|), which cannot overflow (the builtin may return NaN for large |x| on
// some drivers).
fn tanh_safe(x: f32) -> f32 {
    let e = exp(-2.0 * abs(x));
    let t = (1.0 - e) / (1.0 + e);
    return select(-t, t, x >= 0.0);
}

// Activation codes: 0 none, 1 relu, 2 clip(lo, hi), 3 sigmoid, 4 tanh, 5 leaky relu (slope lo).
fn activate(x: f32, code: u32, lo: f32, hi: f32) -> f32 {
    switch code {
        case 1u: { return max(x, 0.0); }
        case 2u: { return min(max(x, lo), hi); }
        case 3u: { return sigmoid(x); }
        case 4u: { return tanh_safe(x); }
        case 5u: { return select(x * lo, x, x >= 0.0); }
        default: { return x; }
    }
}

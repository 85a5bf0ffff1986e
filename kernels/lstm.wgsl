// The LSTM recurrence (ONNX gate order i, o, f, c), after the input projection of every
// step has been computed as one matrix product (gx, biases included). One workgroup per
// direction and batch element loops over the time steps with h and c in workgroup memory:
// no dispatch per step. Each step reads the direction's recurrent weights once.
//
// p = [T, B, H, dirs, reverse, layout, has_clip, clip, input_forget, has_initial]
// gx: [dirs, T * B rows (layout order), 4H]; r: [dirs, 4H, H];
// h0, c0: [dirs, B, H] (layout 0) or [B, dirs, H] (layout 1);
// y: [T, dirs, B, H] (layout 0) or [B, T, dirs, H] (layout 1); yh, yc like h0.

@group(0) @binding(0) var<storage, read> p: array<u32>;
@group(0) @binding(1) var<storage, read> gx: array<T>;
@group(0) @binding(2) var<storage, read> r: array<T>;
@group(0) @binding(3) var<storage, read> h0: array<T>;
@group(0) @binding(4) var<storage, read> c0: array<T>;
@group(0) @binding(5) var<storage, read_write> y: array<T>;
@group(0) @binding(6) var<storage, read_write> yh: array<T>;
@group(0) @binding(7) var<storage, read_write> yc: array<T>;

// Hidden sizes up to 256 (the lowering checks).
var<workgroup> h: array<f32, 256>;
var<workgroup> cell: array<f32, 256>;
var<workgroup> gates: array<f32, 1024>;

fn gate_clip(v: f32) -> f32 {
    if p[6] == 1u {
        return clamp(v, -pf(7u), pf(7u));
    }
    return v;
}

fn state_index(d: u32, bi: u32, u: u32) -> u32 {
    let B = p[1]; let H = p[2]; let dirs = p[3];
    return select((d * B + bi) * H + u, (bi * dirs + d) * H + u, p[5] == 1u);
}

@compute @workgroup_size(256)
fn lstm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let steps = p[0]; let B = p[1]; let H = p[2]; let dirs = p[3];
    let d = wid.x;
    let bi = wid.y;
    let reverse = d == 1u || p[4] == 1u;
    let batch_first = p[5] == 1u;
    let H4 = 4u * H;
    for (var u = lid.x; u < H; u += WG) {
        var hv = 0.0;
        var cv = 0.0;
        if p[9] == 1u {
            hv = f32(h0[state_index(d, bi, u)]);
            cv = f32(c0[state_index(d, bi, u)]);
        }
        h[u] = hv;
        cell[u] = cv;
    }
    workgroupBarrier();
    for (var s = 0u; s < steps; s++) {
        let t = select(s, steps - 1u - s, reverse);
        let row = select(t * B + bi, bi * steps + t, batch_first);
        let gbase = (d * steps * B + row) * H4;
        for (var j = lid.x; j < H4; j += WG) {
            var acc = f32(gx[gbase + j]);
            let rbase = (d * H4 + j) * H;
            for (var k = 0u; k < H; k++) {
                acc += f32(r[rbase + k]) * h[k];
            }
            gates[j] = acc;
        }
        workgroupBarrier();
        for (var u = lid.x; u < H; u += WG) {
            let i = sigmoid(gate_clip(gates[u]));
            let o = sigmoid(gate_clip(gates[H + u]));
            var f = sigmoid(gate_clip(gates[2u * H + u]));
            if p[8] == 1u {
                f = 1.0 - i;
            }
            let cn = f * cell[u] + i * tanh_safe(gate_clip(gates[3u * H + u]));
            let hn = o * tanh_safe(cn);
            cell[u] = cn;
            h[u] = hn;
            let yi = select(((t * dirs + d) * B + bi) * H + u, ((bi * steps + t) * dirs + d) * H + u,
                            batch_first);
            y[yi] = T(hn);
        }
        workgroupBarrier();
    }
    for (var u = lid.x; u < H; u += WG) {
        yh[state_index(d, bi, u)] = T(h[u]);
        yc[state_index(d, bi, u)] = T(cell[u]);
    }
}

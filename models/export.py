#!/usr/bin/env python3
"""Build accel's two seed models in Keras and export them to ONNX with tf2onnx.

The models are built exactly the way a seed user has them: tf.keras (Keras 2, via
tf_keras), channels-last NHWC float32 input, converted with tf2onnx's Keras path and
left as tf2onnx writes them (no hand edits). Weights are random but deterministic.

    # one-time environment (outside the repo)
    python3 -m venv /work/venvs/export
    /work/venvs/export/bin/pip install -r models/requirements-export.txt

    # regenerate models/crnn.onnx and models/unet128.onnx
    /work/venvs/export/bin/python models/export.py --out models/

    # other variants (not committed when over 10 MB)
    /work/venvs/export/bin/python models/export.py --out models/ --only unet --full     # unet128_full.onnx
    /work/venvs/export/bin/python models/export.py --out models/ --only unet --size 224 # unet224.onnx

Files:
  crnn.onnx          CRNN meter reader, input "image" (N,50,350,3), output "probs" (N,87,11).
  unet128.onnx       MobileNetV2(alpha=0.35) U-Net, decoder 128,64,32,16,
                     input "image" (N,128,128,3), output "mask" (N,128,128,1).
  unet128_full.onnx  (--full) seed width: alpha=1.0, decoder 512,256,128,64.
  unet<S>.onnx       (--size S) the same at S x S (S a multiple of 32).

Weights: Keras' default initialisers, then (see build_*) BatchNorm statistics and LSTM
biases drawn at random and every kernel rescaled on a fixed calibration batch so that the
outputs depend on the input (softmax rows far from uniform, mask far from 0.5).

Determinism: every model is built in a fresh Keras session with a fixed seed
(tf_keras.utils.set_random_seed + op determinism), the random constants come from
numpy.random.default_rng(seed), PYTHONHASHSEED is pinned to 0 and tf2onnx's graph nodes
hash by creation order (see deterministic_tf2onnx). Re-running writes byte-identical files.
"""

import argparse
import os
import sys

# tf2onnx iterates over sets of strings in places: fix Python's hash seed (re-executing
# once) so that the files come out byte-identical from run to run.
if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

# tf2onnx 1.17 handles Keras 2 models; make tf.keras resolve to tf_keras as well.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
from tf_keras import layers  # noqa: E402

OPSET = 17
CRNN_SEED = 1234
UNET_SEED = 5678
CRNN_KERAS_PARAMS = 432_011


# Random weights are rescaled on a fixed calibration batch (LSUV-style) so that every
# layer's output varies with the input: with plain Glorot weights on uniform-noise images
# the CRNN's LSTMs are driven by their biases alone (every row of every image decodes to the
# same class) and the U-Net's decoder by the BatchNorm constants. Only weight values change;
# the architecture and the ONNX graph do not.
ACT_STD = 1.0           # target across-batch std of conv / dense outputs
LOGIT_STD = 2.0         # target std of the softmax / sigmoid inputs


def calibration_input(shape, seed, batch=8):
    rng = np.random.default_rng(seed + 1)
    return rng.uniform(0.0, 1.0, (batch,) + tuple(shape)).astype(np.float32)


def batch_std(y):
    """Std across the batch axis, averaged over all other positions."""
    return float(np.std(np.asarray(y, dtype=np.float64), axis=0).mean())


def scale_kernel(layer, s, bias_shift=None):
    ws = layer.get_weights()
    ws[0] = (ws[0] * s).astype(np.float32)
    if bias_shift is not None:
        ws[1] = ((ws[1] + bias_shift) * s).astype(np.float32)
    layer.set_weights(ws)


def fresh_session(seed):
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


# --------------------------------------------------------------------------- CRNN

def build_crnn(seed=CRNN_SEED):
    """Seed CRNN: 350x50x3 crop -> 87 time steps x 11 classes (digits + CTC blank)."""
    fresh_session(seed)
    inp = keras.Input(shape=(50, 350, 3), name="image", dtype="float32")
    x = layers.Conv2D(32, (3, 3), padding="same", activation="relu", name="conv1")(inp)
    x = layers.MaxPooling2D((2, 2), name="pool1")(x)
    x = layers.Conv2D(64, (3, 3), padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D((2, 2), name="pool2")(x)             # (12, 87, 64)
    x = layers.Permute((2, 1, 3), name="permute")(x)             # (87, 12, 64): width = time
    x = layers.Reshape((87, 12 * 64), name="reshape")(x)         # (87, 768)
    x = layers.Dense(64, activation="relu", name="dense1")(x)
    x = layers.Bidirectional(layers.LSTM(128, return_sequences=True), name="bilstm1")(x)
    x = layers.Bidirectional(layers.LSTM(64, return_sequences=True), name="bilstm2")(x)
    out = layers.Dense(11, activation="softmax", name="probs")(x)
    model = keras.Model(inp, out, name="crnn")
    n = model.count_params()
    if n != CRNN_KERAS_PARAMS:
        raise SystemExit(f"CRNN has {n} parameters, expected {CRNN_KERAS_PARAMS}")

    rng = np.random.default_rng(seed)
    x = calibration_input(model.input_shape[1:], seed)
    # Conv / Dense + ReLU: pre-activation centred per channel (bias) and scaled to unit
    # across-batch std (kernel), as a data-dependent init would; uniform-noise images carry
    # a large constant component that otherwise drowns the input-dependent part.
    for name in ("conv1", "conv2", "dense1"):
        layer = model.get_layer(name)
        layer.activation = keras.activations.linear
        y = keras.Model(inp, layer.output)(x).numpy()
        layer.activation = keras.activations.relu
        w, b = layer.get_weights()
        mean = y.reshape(-1, y.shape[-1]).mean(axis=0)
        s = ACT_STD / batch_std(y)
        layer.set_weights([(w * s).astype(np.float32), ((b - mean) * s).astype(np.float32)])
    # LSTMs: input projection x @ W centred and scaled to unit std, plus random biases
    # N(0, 0.3) instead of Keras' zeros (forget gate 1), so that a wrong gate order or a
    # dropped bias shows up.
    for name in ("bilstm1", "bilstm2"):
        layer = model.get_layer(name)
        h = keras.Model(inp, layer.input)(x).numpy()
        for lstm in (layer.forward_layer, layer.backward_layer):
            kernel, recurrent, _ = lstm.get_weights()
            z = np.tensordot(h, kernel, 1).reshape(-1, kernel.shape[1])
            s = 1.0 / z.std(axis=0)
            bias = -z.mean(axis=0) * s + rng.normal(0.0, 0.3, size=z.shape[1])
            lstm.set_weights([w.astype(np.float32) for w in (kernel * s, recurrent, bias)])
    # Classifier: random bias (a zero bias would be dropped by tf2onnx), logits with std ~2
    # so that softmax rows are far from uniform and differ from step to step.
    layer = model.get_layer("probs")
    h = keras.Model(inp, layer.input)(x).numpy()
    w, _ = layer.get_weights()
    b = rng.normal(0.0, 0.1, size=w.shape[1])
    z = np.tensordot(h, w, 1) + b
    s = LOGIT_STD / z.std()
    layer.set_weights([(w * s).astype(np.float32), (b * s).astype(np.float32)])
    return model


# --------------------------------------------------------------------------- U-Net

SKIP_NAMES = [
    "block_1_expand_relu",   # 64x64
    "block_3_expand_relu",   # 32x32
    "block_6_expand_relu",   # 16x16
    "block_13_expand_relu",  # 8x8
    "block_16_project",      # 4x4
]


def upsample(filters, size, name):
    """pix2pix upsample block: ConvTranspose(stride 2, 'same', no bias) + BatchNorm + ReLU.

    (The tutorial draws the kernel from N(0, 0.02) for training; the Keras default is used
    here and rescaled on the calibration batch like every other kernel.)
    """
    return keras.Sequential(
        [
            layers.Conv2DTranspose(filters, size, strides=2, padding="same", use_bias=False),
            layers.BatchNormalization(),
            layers.ReLU(),
        ],
        name=name,
    )


def build_unet(size=128, alpha=0.35, decoder=(128, 64, 32, 16), seed=UNET_SEED):
    """Seed U-Net (TensorFlow segmentation tutorial): MobileNetV2 encoder + pix2pix decoder."""
    if size % 32:
        raise SystemExit("--size must be a multiple of 32")
    fresh_session(seed)
    base = keras.applications.MobileNetV2(
        input_shape=(size, size, 3), include_top=False, weights=None, alpha=alpha)
    down_stack = keras.Model(inputs=base.input,
                             outputs=[base.get_layer(n).output for n in SKIP_NAMES],
                             name="down_stack")
    up_stack = [upsample(f, 4, name=f"up{i}") for i, f in enumerate(decoder)]
    last = layers.Conv2DTranspose(1, 3, strides=2, padding="same", name="last")

    inp = keras.Input(shape=(size, size, 3), name="image", dtype="float32")
    skips = down_stack(inp)
    x = skips[-1]
    for i, (up, skip) in enumerate(zip(up_stack, reversed(skips[:-1]))):
        x = up(x)
        x = layers.Concatenate(name=f"concat{i}")([x, skip])
    x = last(x)
    out = layers.Activation("sigmoid", name="mask")(x)
    model = keras.Model(inp, out, name="unet")

    # Random BatchNorm statistics and affine parameters, so that a BN-folding bug shows.
    rng = np.random.default_rng(seed)
    bns = [m for m in model.submodules if isinstance(m, layers.BatchNormalization)]
    for bn in sorted(bns, key=lambda m: m.name):
        c = bn.gamma.shape[0]
        gamma = rng.uniform(0.5, 1.5, c)
        beta = rng.normal(0.0, 0.1, c)
        mean = rng.normal(0.0, 0.1, c)
        var = rng.uniform(0.5, 1.5, c)
        bn.set_weights([w.astype(np.float32) for w in (gamma, beta, mean, var)])

    # Every conv before a BatchNorm: output scaled to unit across-batch std, in graph order.
    x = calibration_input(model.input_shape[1:], seed)
    convs = [l for l in base.layers if isinstance(l, (layers.Conv2D, layers.DepthwiseConv2D))]
    probe = keras.Model(base.input, [l.output for l in convs])
    for i, conv in enumerate(convs):
        scale_kernel(conv, ACT_STD / batch_std(probe(x, training=False)[i].numpy()))
    feats = [f.numpy() for f in down_stack(x, training=False)]
    h = feats[-1]
    for up, skip in zip(up_stack, reversed(feats[:-1])):
        conv = up.layers[0]
        scale_kernel(conv, ACT_STD / batch_std(conv(h).numpy()))
        h = np.concatenate([up(h, training=False).numpy(), skip], axis=-1)
    # Last ConvTranspose: pre-sigmoid map centred, std ~2 (mask far from all-0.5).
    z = last(h).numpy()
    scale_kernel(last, LOGIT_STD / z.std(), bias_shift=-float(z.mean()))
    return model


# --------------------------------------------------------------------------- export

def deterministic_tf2onnx():
    """Give tf2onnx's graph nodes a hash that does not depend on memory addresses.

    tf2onnx's rewriters and optimizers iterate over sets of Node objects, which hash by id(),
    so the order in which nodes are created (and so their generated names and the order of
    the output graph) changes from run to run. Hashing by creation order makes the output
    byte-identical without changing what tf2onnx does.
    """
    import itertools
    from tf2onnx import graph as tfg

    if getattr(tfg.Node, "_accel_deterministic", False):
        return
    counter = itertools.count()
    init = tfg.Node.__init__

    def __init__(self, *args, **kwargs):
        self._accel_seq = next(counter)
        init(self, *args, **kwargs)

    tfg.Node.__init__ = __init__
    tfg.Node.__hash__ = lambda self: self._accel_seq
    tfg.Node._accel_deterministic = True


def export(model, path, check=True):
    import tf2onnx
    import onnx

    deterministic_tf2onnx()

    shape = (None,) + tuple(model.input_shape[1:])
    spec = (tf.TensorSpec(shape, tf.float32, name="image"),)
    model_proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=OPSET)
    onnx.checker.check_model(model_proto)
    with open(path, "wb") as f:
        f.write(model_proto.SerializeToString())
    size_mb = os.path.getsize(path) / 1e6
    print(f"wrote {path}: {model.count_params():,} Keras params, {size_mb:.2f} MB")

    if check:
        import onnxruntime as ort
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        for batch in (1, 3):
            x = rng.uniform(0.0, 1.0, (batch,) + shape[1:]).astype(np.float32)
            ref = model(x, training=False).numpy()
            got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
            diff = float(np.max(np.abs(ref - got)))
            print(f"  batch {batch}: out {got.shape} min {got.min():.4g} max {got.max():.4g} "
                  f"std {got.std():.4g}; max |keras - ort| = {diff:.3g}")
            if diff > 1e-4:
                raise SystemExit(f"{path}: onnxruntime disagrees with Keras ({diff})")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)),
                   help="output folder (default: the folder of this script)")
    p.add_argument("--only", choices=["crnn", "unet"], help="export one model only")
    p.add_argument("--full", action="store_true",
                   help="U-Net at the seed's full width (alpha 1.0, decoder 512,256,128,64) "
                        "-> unet<S>_full.onnx")
    p.add_argument("--size", type=int, default=128, help="U-Net input size (multiple of 32)")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime check")
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    check = not a.no_check

    if a.only in (None, "crnn"):
        export(build_crnn(), os.path.join(a.out, "crnn.onnx"), check)
    if a.only in (None, "unet"):
        if a.full:
            m, name = build_unet(a.size, alpha=1.0, decoder=(512, 256, 128, 64)), f"unet{a.size}_full"
        else:
            m, name = build_unet(a.size), f"unet{a.size}"
        export(m, os.path.join(a.out, name + ".onnx"), check)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Train accel's two shipped models on synthetic data and export them with tf2onnx.

    python3 -m venv /work/venvs/export
    /work/venvs/export/bin/pip install -r models/requirements-export.txt
    /work/venvs/export/bin/python models/train.py --out models/        # both, ~N min on 2 cores

The architectures are export.py's (the seed CRNN and the MobileNetV2 + pix2pix U-Net at
alpha 0.35), starting from its calibrated initial weights. Data come from models/synth with
seeds from synth.TRAIN_SEED; the held-out check at the end uses synth.EVAL_SEED (other
images, the same generator) and runs the exported ONNX file in ONNX Runtime. The same
numbers are checked through accel by tests/task_accuracy.rs.

CRNN: CTC loss (blank = class 10, the last), Adam with cosine decay.
U-Net: binary cross-entropy + soft Dice on the defect mask, Adam with cosine decay.
"""

import argparse
import json
import os
import sys
import time
from multiprocessing import Pool

# oneDNN kernels: export.py turns them off for bit-exact exports; training wants the speed.
os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1"
import export  # noqa: F401,E402  (pins PYTHONHASHSEED and Keras 2 before TensorFlow loads)
from export import build_crnn, build_unet, export as export_onnx, fresh_session  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

import synth  # noqa: E402
from synth import meters as synth_meters, plates as synth_plates  # noqa: E402

MAX_DIGITS = 8
STEPS = 87


def _meter_chunk(args):
    seed, count = args
    return synth_meters.meters(seed, count)


def _plate_chunk(args):
    seed, count, share = args
    return synth_plates.plates(seed, count, share)


def parallel(fn, seed, count, chunk, *extra):
    """Generate count items in chunks with per-chunk seeds (seed, seed+1, ...) on all cores."""
    jobs = [(seed + i, min(chunk, count - i * chunk)) + extra for i in range((count + chunk - 1) // chunk)]
    with Pool(os.cpu_count()) as pool:
        parts = pool.map(fn, jobs)
    return [np.concatenate([p[k] for p in parts]) if isinstance(parts[0][k], np.ndarray)
            else sum((p[k] for p in parts), []) for k in range(len(parts[0]))]


def encode_labels(labels):
    y = np.full((len(labels), 1 + MAX_DIGITS), 0, np.int32)
    for i, s in enumerate(labels):
        y[i, 0] = len(s)
        y[i, 1:1 + len(s)] = [int(c) for c in s]
    return y


def ctc_loss(y_true, y_pred):
    lens = tf.cast(y_true[:, :1], tf.int32)
    labels = tf.cast(y_true[:, 1:], tf.int32)
    steps = tf.fill([tf.shape(y_pred)[0], 1], STEPS)
    return keras.backend.ctc_batch_cost(labels, y_pred, steps, lens)


def greedy(probs):
    out = []
    for p in probs.argmax(-1):
        s, prev = [], -1
        for c in p:
            if c != prev and c != 10:
                s.append(str(c))
            prev = c
        out.append("".join(s))
    return out


def dataset(x, y, batch, shuffle_seed):
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=shuffle_seed)
    return ds.batch(batch).map(lambda a, b: (tf.cast(a, tf.float32) / 255.0, b)).prefetch(2)


def cosine(lr, steps):
    return keras.optimizers.schedules.CosineDecay(lr, steps, alpha=0.01)


def ort_session(path):
    import onnxruntime as ort
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def ort_run(sess, x, batch=64):
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: (x[i:i + batch].astype(np.float32) / 255.0)})[0]
                           for i in range(0, len(x), batch)])


def evaluate_crnn(path, count):
    x, labels = parallel(_meter_chunk, synth.EVAL_SEED, count, 250)
    pred = greedy(ort_run(ort_session(path), x))
    full = float(np.mean([p == t for p, t in zip(pred, labels)]))
    # Character accuracy: 1 - edit distance / label length, summed over the set.
    def edits(a, b):
        d = list(range(len(b) + 1))
        for i, ca in enumerate(a, 1):
            prev, d[0] = d[0], i
            for j, cb in enumerate(b, 1):
                prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (ca != cb))
        return d[-1]
    errs = sum(edits(p, t) for p, t in zip(pred, labels))
    chars = 1.0 - errs / sum(len(t) for t in labels)
    wrong = [(t, p) for p, t in zip(pred, labels) if p != t][:10]
    return {"images": count, "reading_accuracy": full, "char_accuracy": chars, "examples_wrong": wrong}


def plate_metrics(prob, masks, area_threshold_pct):
    pred = prob[..., 0] >= 0.5
    truth = masks.astype(bool)
    defective = truth.any(axis=(1, 2))
    inter = (pred & truth).sum(axis=(1, 2))
    union = (pred | truth).sum(axis=(1, 2))
    area = pred.mean(axis=(1, 2)) * 100
    flagged = area > area_threshold_pct
    return {
        "plates": int(len(masks)),
        "defective_plates": int(defective.sum()),
        "mean_iou_defective": float(np.mean(inter[defective] / union[defective])),
        "pooled_iou_defective": float(inter[defective].sum() / union[defective].sum()),
        "clean_flagged": float(flagged[~defective].mean()),
        "defective_missed": float((~flagged[defective]).mean()),
        "area_threshold_pct": area_threshold_pct,
    }


def evaluate_unet(path, count, area_threshold_pct):
    x, masks, _ = parallel(_plate_chunk, synth.EVAL_SEED, count, 250, 0.5)
    return plate_metrics(ort_run(ort_session(path), x), masks, area_threshold_pct)


def train_crnn(a):
    t0 = time.time()
    x, labels = parallel(_meter_chunk, synth.TRAIN_SEED, a.crnn_count, 500)
    y = encode_labels(labels)
    print(f"crnn: generated {len(x)} meters in {time.time() - t0:.0f} s", flush=True)
    model = build_crnn()
    fresh_session(1)   # training's own seed; the initial weights are build_crnn's
    steps = a.crnn_epochs * ((len(x) + a.batch - 1) // a.batch)
    model.compile(keras.optimizers.Adam(cosine(a.crnn_lr, steps), clipnorm=5.0), loss=ctc_loss)
    t1 = time.time()
    model.fit(dataset(x, y, a.batch, 11), epochs=a.crnn_epochs, verbose=2)
    print(f"crnn: trained in {time.time() - t1:.0f} s", flush=True)
    return model, time.time() - t0


def train_unet(a):
    t0 = time.time()
    x, masks, _ = parallel(_plate_chunk, synth.TRAIN_SEED, a.unet_count, 500, 0.7)
    y = masks[..., None].astype(np.float32)
    print(f"unet: generated {len(x)} plates in {time.time() - t0:.0f} s", flush=True)
    model = build_unet()
    fresh_session(2)

    def loss(t, p):
        bce = keras.losses.binary_crossentropy(t, p)
        inter = tf.reduce_sum(t * p, axis=[1, 2, 3])
        dice = 1.0 - (2.0 * inter + 1.0) / (tf.reduce_sum(t + p, axis=[1, 2, 3]) + 1.0)
        return tf.reduce_mean(bce, axis=[1, 2]) + dice

    steps = a.unet_epochs * ((len(x) + a.batch - 1) // a.batch)
    model.compile(keras.optimizers.Adam(cosine(a.unet_lr, steps)), loss=loss)
    t1 = time.time()
    model.fit(dataset(x, y, a.batch, 12), epochs=a.unet_epochs, verbose=2)
    print(f"unet: trained in {time.time() - t1:.0f} s", flush=True)
    return model, time.time() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    p.add_argument("--only", choices=["crnn", "unet"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--crnn-count", type=int, default=24000)
    p.add_argument("--crnn-epochs", type=int, default=8)
    p.add_argument("--crnn-lr", type=float, default=2e-3)
    p.add_argument("--unet-count", type=int, default=8000)
    p.add_argument("--unet-epochs", type=int, default=16)
    p.add_argument("--unet-lr", type=float, default=2e-3)
    p.add_argument("--eval-count", type=int, default=2000)
    p.add_argument("--area-threshold-pct", type=float, default=0.05)
    p.add_argument("--eval-only", action="store_true", help="evaluate the files in --out")
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    report = {}
    for name in ("crnn", "unet"):
        if a.only not in (None, name):
            continue
        path = os.path.join(a.out, "crnn.onnx" if name == "crnn" else "unet128.onnx")
        if not a.eval_only:
            model, secs = (train_crnn if name == "crnn" else train_unet)(a)
            export_onnx(model, path)
            report[f"{name}_train_seconds"] = round(secs)
        t = time.time()
        report[name] = (evaluate_crnn(path, a.eval_count) if name == "crnn"
                        else evaluate_unet(path, a.eval_count, a.area_threshold_pct))
        print(f"{name}: held-out ({time.time() - t:.0f} s): {json.dumps(report[name])}", flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Build accel's two seed architectures in PyTorch and export them to ONNX.

These files are test fixtures: graphs written by an exporter other than tf2onnx, so that
accel's importer is tested on files it (and tf2onnx) did not write. Input is NCHW, as PyTorch
users have it. Each model is exported twice, with the TorchScript exporter
(dynamo=False, opset 17, dynamic batch axis) and with the torch.export-based one
(dynamo=True, its default opset, dynamic batch dimension). Weights are random and
deterministic, with randomised BatchNorm statistics and input-dependent outputs
(the same recipe as models/export.py).

    python3 -m venv /work/venvs/torch
    /work/venvs/torch/bin/pip install -r models/requirements-torch.txt
    /work/venvs/torch/bin/python models/export_torch.py --out tests/fixtures/

writes crnn_torch.onnx, crnn_torch_dynamo.onnx, unet128_torch.onnx, unet128_torch_dynamo.onnx.

  CRNN:  input "image" (N,3,50,350) -> "probs" (N,87,11)
  U-Net: input "image" (N,3,128,128) -> "mask" (N,1,128,128); MobileNetV2 alpha 0.35
         (hand-written, torchvision layout: symmetric padding), decoder 128,64,32,16.
         --full: alpha 1.0, decoder 512,256,128,64 (unet128_torch_full*.onnx); --size S.
"""

import argparse
import logging
import os
import sys
import warnings

import numpy as np
import torch
from torch import nn

CRNN_SEED = 1234
UNET_SEED = 5678
ACT_STD = 1.0      # target across-batch std of conv / linear outputs
LOGIT_STD = 2.0    # target std of the softmax / sigmoid inputs


def batch_std(y):
    return float(y.double().std(dim=0, unbiased=False).mean())


def calibration_input(shape, seed, batch=8):
    rng = np.random.default_rng(seed + 1)
    return torch.from_numpy(rng.uniform(0.0, 1.0, (batch,) + tuple(shape)).astype(np.float32))


def capture(model, module, x):
    """Output of `module` when `model` runs on x."""
    out = {}
    h = module.register_forward_hook(lambda m, i, o: out.__setitem__("y", o))
    with torch.no_grad():
        model(x)
    h.remove()
    return out["y"]


def capture_input(model, module, x):
    out = {}
    h = module.register_forward_hook(lambda m, i, o: out.__setitem__("x", i[0]))
    with torch.no_grad():
        model(x)
    h.remove()
    return out["x"]


# --------------------------------------------------------------------------- CRNN

class CRNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.relu = nn.ReLU()
        self.fc1 = nn.Linear(12 * 64, 64)
        self.lstm1 = nn.LSTM(64, 128, batch_first=True, bidirectional=True)
        self.lstm2 = nn.LSTM(256, 64, batch_first=True, bidirectional=True)
        self.fc2 = nn.Linear(128, 11)

    def forward(self, image):                       # (N, 3, 50, 350)
        x = self.pool(self.relu(self.conv1(image)))
        x = self.pool(self.relu(self.conv2(x)))     # (N, 64, 12, 87)
        x = x.permute(0, 3, 2, 1)                   # (N, 87, 12, 64): width = time
        x = x.reshape(x.shape[0], 87, 12 * 64)      # same feature order as the Keras model
        x = self.relu(self.fc1(x))
        x, _ = self.lstm1(x)
        x, _ = self.lstm2(x)
        return torch.softmax(self.fc2(x), dim=-1)


def build_crnn(seed=CRNN_SEED):
    torch.manual_seed(seed)
    m = CRNN().eval()
    rng = np.random.default_rng(seed)
    x = calibration_input((3, 50, 350), seed)
    with torch.no_grad():
        for layer in (m.conv1, m.conv2, m.fc1):     # centre + scale the pre-ReLU output
            y = capture(m, layer, x)
            dims = [d for d in range(y.dim()) if d != (1 if y.dim() == 4 else y.dim() - 1)]
            mean = y.mean(dim=dims)
            s = ACT_STD / batch_std(y)
            layer.weight.mul_(s)
            layer.bias.sub_(mean).mul_(s)
        for lstm in (m.lstm1, m.lstm2):             # unit-std input projection, random biases
            h = capture_input(m, lstm, x).reshape(-1, lstm.input_size)
            for sfx in ("", "_reverse"):
                w_ih = getattr(lstm, "weight_ih_l0" + sfx)
                z = h @ w_ih.T
                s = 1.0 / z.std(dim=0, unbiased=False)
                w_ih.mul_(s[:, None])
                n = z.shape[1]
                getattr(lstm, "bias_ih_l0" + sfx).copy_(
                    -z.mean(dim=0) * s + torch.from_numpy(rng.normal(0, 0.2, n).astype(np.float32)))
                getattr(lstm, "bias_hh_l0" + sfx).copy_(
                    torch.from_numpy(rng.normal(0, 0.2, n).astype(np.float32)))
        z = capture(m, m.fc2, x)
        m.fc2.weight.mul_(LOGIT_STD / float(z.std()))
        m.fc2.bias.mul_(LOGIT_STD / float(z.std()))
    return m


# --------------------------------------------------------------------------- U-Net

def make_divisible(v, divisor=8, min_value=None):
    """Keras' / torchvision's channel rounding."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def conv_bn(cin, cout, k, stride=1, groups=1, relu6=True):
    layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout)]
    if relu6:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expansion, project_bn=True):
        super().__init__()
        hidden = cin * expansion
        self.expand = conv_bn(cin, hidden, 1) if expansion != 1 else None
        self.depthwise = conv_bn(hidden, hidden, 3, stride, groups=hidden)
        # The U-Net's last skip is Keras' "block_16_project", the projection *before* its
        # BatchNorm, so the last block has no project BN.
        self.project = (conv_bn(hidden, cout, 1, relu6=False) if project_bn else
                        nn.Conv2d(hidden, cout, 1, bias=False))
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        e = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(e))
        return (x + y if self.residual else y), e


class MobileNetV2Encoder(nn.Module):
    """MobileNetV2 up to block_16_project; returns the five U-Net skips."""
    # (expansion, channels, repeats, first stride) as in the paper / Keras applications
    CFG = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
           (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]

    def __init__(self, alpha):
        super().__init__()
        c = make_divisible(32 * alpha)
        self.stem = conv_bn(3, c, 3, 2)
        blocks = []
        for t, ch, n, s in self.CFG:
            cout = make_divisible(int(ch * alpha))
            for i in range(n):
                last = len(blocks) == 16
                blocks.append(InvertedResidual(c, cout, s if i == 0 else 1, t, project_bn=not last))
                c = cout
        self.blocks = nn.ModuleList(blocks)          # blocks[k] is Keras' block_k
        self.channels = c

    def forward(self, x):
        x = self.stem(x)
        skips = []
        for k, block in enumerate(self.blocks):
            x, expanded = block(x)
            if k in (1, 3, 6, 13):                   # block_k_expand_relu
                skips.append(expanded)
        skips.append(x)                              # block_16_project (pre-BN)
        return skips


class UNet(nn.Module):
    def __init__(self, alpha=0.35, decoder=(128, 64, 32, 16)):
        super().__init__()
        self.encoder = MobileNetV2Encoder(alpha)
        skip_ch = [b.expand[0].out_channels for b in
                   (self.encoder.blocks[13], self.encoder.blocks[6],
                    self.encoder.blocks[3], self.encoder.blocks[1])]
        cin = self.encoder.channels
        ups = []
        for f, sc in zip(decoder, skip_ch):
            ups.append(nn.Sequential(nn.ConvTranspose2d(cin, f, 4, 2, 1, bias=False),
                                     nn.BatchNorm2d(f), nn.ReLU()))
            cin = f + sc
        self.ups = nn.ModuleList(ups)
        self.last = nn.ConvTranspose2d(cin, 1, 3, 2, padding=1, output_padding=1)

    def forward(self, image):                        # (N, 3, S, S)
        skips = self.encoder(image)
        x = skips[-1]
        for up, skip in zip(self.ups, reversed(skips[:-1])):
            x = torch.cat([up(x), skip], dim=1)
        return torch.sigmoid(self.last(x))           # (N, 1, S, S)


def build_unet(size=128, alpha=0.35, decoder=(128, 64, 32, 16), seed=UNET_SEED):
    torch.manual_seed(seed)
    m = UNet(alpha, decoder).eval()
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for bn in (mod for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)):
            c = bn.num_features
            for t, v in ((bn.weight, rng.uniform(0.5, 1.5, c)), (bn.bias, rng.normal(0, 0.1, c)),
                         (bn.running_mean, rng.normal(0, 0.1, c)),
                         (bn.running_var, rng.uniform(0.5, 1.5, c))):
                t.copy_(torch.from_numpy(v.astype(np.float32)))
        x = calibration_input((3, size, size), seed)
        convs = [mod for mod in m.modules()
                 if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d)) and mod is not m.last]
        for conv in convs:                           # module order = forward order
            conv.weight.mul_(ACT_STD / batch_std(capture(m, conv, x)))
        z = capture(m, m.last, x)
        s = LOGIT_STD / float(z.std())
        m.last.bias.sub_(float(z.mean())).mul_(s)
        m.last.weight.mul_(s)
    return m


# --------------------------------------------------------------------------- export

def export(model, shape, out_name, path_base, check=True):
    import onnx

    x = torch.rand((2,) + shape, generator=torch.Generator().manual_seed(0))
    written = []
    path = path_base + ".onnx"
    torch.onnx.export(model, (x,), path, dynamo=False, opset_version=17,
                      input_names=["image"], output_names=[out_name],
                      dynamic_axes={"image": {0: "batch"}, out_name: {0: "batch"}})
    written.append(path)
    path = path_base + "_dynamo.onnx"
    try:
        batch = torch.export.Dim("batch", min=1, max=1024)
        prog = torch.onnx.export(model, (x,), dynamo=True, input_names=["image"],
                                 output_names=[out_name],
                                 dynamic_shapes={"image": {0: batch}}, verbose=False)
        prog.save(path)
        written.append(path)
    except Exception as e:  # noqa: BLE001 -- report and go on with the legacy file
        print(f"dynamo export of {path} failed: {type(e).__name__}: {e}", file=sys.stderr)

    n = sum(p.numel() for p in model.parameters())
    for path in written:
        onnx.checker.check_model(onnx.load(path))
        print(f"wrote {path}: {n:,} torch params, {os.path.getsize(path) / 1e6:.2f} MB")
        if check:
            import onnxruntime as ort
            sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            rng = np.random.default_rng(0)
            for b in (1, 3):
                xb = rng.uniform(0.0, 1.0, (b,) + shape).astype(np.float32)
                with torch.no_grad():
                    ref = model(torch.from_numpy(xb)).numpy()
                got = sess.run(None, {sess.get_inputs()[0].name: xb})[0]
                diff = float(np.abs(ref - got).max())
                print(f"  batch {b}: out {got.shape} min {got.min():.4g} max {got.max():.4g} "
                      f"std {got.std():.4g}; max |torch - ort| = {diff:.3g}")
                if diff > 1e-4:
                    raise SystemExit(f"{path}: onnxruntime disagrees with torch ({diff})")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="tests/fixtures", help="output folder")
    p.add_argument("--only", choices=["crnn", "unet"])
    p.add_argument("--full", action="store_true", help="U-Net at the seed's full width")
    p.add_argument("--size", type=int, default=128, help="U-Net input size (multiple of 32)")
    p.add_argument("--no-check", action="store_true")
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)   # "torchvision is not installed"
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    if a.only in (None, "crnn"):
        export(build_crnn(), (3, 50, 350), "probs", os.path.join(a.out, "crnn_torch"),
               not a.no_check)
    if a.only in (None, "unet"):
        if a.full:
            m, name = build_unet(a.size, 1.0, (512, 256, 128, 64)), f"unet{a.size}_torch_full"
        else:
            m, name = build_unet(a.size), f"unet{a.size}_torch"
        export(m, (3, a.size, a.size), "mask", os.path.join(a.out, name), not a.no_check)


if __name__ == "__main__":
    sys.exit(main())

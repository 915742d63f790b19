"""A plain PyTorch SimCLR ResNet-18 train step on the CPU, written without simclr_tf code.

The second side-by-side baseline for `python -m tools.benchmark step` (optional: needs
`pip install torch==2.13.0`, never a project dependency). Same network as
`plain_keras_simclr.py` (CIFAR stem, 2-layer head, NT-Xent, momentum SGD), channels-last,
float32 and bf16 autocast. `benchmark.py` runs it in its own process, so the two
frameworks' thread pools never share the cores at once:

  python tools/plain_torch_simclr.py BATCH.npz --threads=2 --warmup=4 --repeats=10

BATCH.npz holds `view1` and `view2` [n, h, w, 3] float32 (real augmented images).
Prints one JSON line per precision: {"precision", "step_s"}.
"""

import argparse
import json
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        nn.init.zeros_(self.bn2.weight)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


def resnet18(width=1.0):
    stem = int(64 * width)
    layers = [nn.Conv2d(3, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU()]
    cin = stem
    for filters, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        cout = int(filters * width)
        layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers), cin


class PlainSimCLR(nn.Module):
    def __init__(self, width=1.0, temperature=0.5):
        super().__init__()
        self.encoder, dim = resnet18(width)
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 128))
        self.temperature = temperature

    def loss(self, view1, view2):
        z = F.normalize(self.head(self.encoder(torch.cat([view1, view2]))).float(), dim=1)
        n = view1.shape[0]
        logits = z @ z.T / self.temperature
        logits = logits - 1e9 * torch.eye(2 * n)
        labels = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
        return F.cross_entropy(logits, labels)


def time_precision(view1, view2, width, bf16, warmup, repeats):
    model = PlainSimCLR(width).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model.loss(view1, view2)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("batch_npz")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--precisions", default="float32,bf16_autocast")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = np.load(args.batch_npz)

    def to_torch(x):  # NHWC array -> NCHW tensor stored channels-last
        return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)

    view1, view2 = to_torch(data["view1"]), to_torch(data["view2"])
    for precision in args.precisions.split(","):
        seconds = time_precision(
            view1, view2, args.width, precision != "float32", args.warmup, args.repeats
        )
        print(json.dumps({"precision": precision, "step_s": seconds}), flush=True)


if __name__ == "__main__":
    main()

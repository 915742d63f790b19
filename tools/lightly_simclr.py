"""lightly's SimCLR on the CPU: the independent implementation `python -m tools.benchmark
accuracy` compares simclr_tf with (needs requirements-bench.txt in its own environment;
no simclr_tf or TensorFlow code is imported here).

  python tools/lightly_simclr.py --data=cifar10.npz --out=features.npz --epochs=1 --seed=0

lightly's parts, set to simclr_tf's CIFAR recipe (flags/study_cpu.cfg) or the closest:
`SimCLRTransform` (input 32, colour strength 0.5, no blur, crop area 0.08-1, flip,
grayscale 0.2, no normalisation: images in [0, 1] as simclr_tf feeds them),
`NTXentLoss` (temperature 0.5; lightly's mean over the 2N anchors), lightly's `LARS`
(momentum 0.9, trust 0.001, weight decay 1e-4; BN and biases in a group without decay,
which lightly's LARS also keeps out of layer adaptation), `SimCLRProjectionHead` with
3 layers of the representation's width to 128 (lightly's last layer has a bias and no
BN; simclr_tf's has BN). The backbone is simclr_tf's ResNet-18 rewritten in PyTorch
(CIFAR stem, width multiplier, a projection shortcut in the first block of every group,
last BN of each block at gamma 0), in PyTorch's default initialisation. Linear warmup
then cosine to 0 over exactly --steps_per_epoch x --epochs steps, set every step.

`data` holds `train_images` uint8 [N, 32, 32, 3] (and the eval images `train_eval`,
`test_eval`); `out` gets the frozen features `h_train`, `z_train`, `h_test`, `z_test`
(float32, eval mode) and the run's `seconds`. Prints one JSON line per epoch.
"""

import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from lightly.transforms import SimCLRTransform
from lightly.utils.lars import LARS
from PIL import Image
from torch import nn


class Block(nn.Module):
    def __init__(self, cin, cout, stride, project):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout, momentum=0.1, eps=1e-5)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, momentum=0.1, eps=1e-5)
        nn.init.zeros_(self.bn2.weight)
        self.shortcut = nn.Identity()
        if project:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


def resnet18(width):
    def w(base):
        return max(int(base * width), 1)

    layers = [nn.Conv2d(3, w(64), 3, 1, 1, bias=False), nn.BatchNorm2d(w(64)), nn.ReLU()]
    cin = w(64)
    for base, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [Block(cin, w(base), stride, True), Block(w(base), w(base), 1, False)]
        cin = w(base)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers), cin


class Views(torch.utils.data.Dataset):
    def __init__(self, images, transform):
        self.images, self.transform = images, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return tuple(self.transform(Image.fromarray(self.images[i])))


def schedule(step, peak, warmup, total):
    """simclr_tf's warmup_cosine: linear from 0, then cosine to 0 at `total`."""
    if step < warmup:
        return peak * step / warmup
    return (
        peak * 0.5 * (1 + math.cos(math.pi * min(step - warmup, total - warmup) / (total - warmup)))
    )


def features(backbone, head, images, batch=500):
    backbone.eval()
    head.eval()
    hs, zs = [], []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = torch.from_numpy(images[start : start + batch]).permute(0, 3, 1, 2).float() / 255
            h = backbone(x.contiguous(memory_format=torch.channels_last))
            hs.append(h.numpy())
            zs.append(head(h).numpy())
    return np.concatenate(hs), np.concatenate(zs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--steps_per_epoch", type=int, default=195)
    parser.add_argument("--warmup_steps", type=int, default=98)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--learning_rate", type=float, default=1.0)  # x batch / 256
    parser.add_argument("--weight_decay", type=float, default=1e-4)
    parser.add_argument("--temperature", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (as simclr_tf's auto)")
    args = parser.parse_args()
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)
    data = np.load(args.data)
    transform = SimCLRTransform(
        input_size=32,
        cj_strength=0.5,
        gaussian_blur=0.0,
        min_scale=0.08,
        random_gray_scale=0.2,
        hf_prob=0.5,
        normalize=None,
    )
    loader = torch.utils.data.DataLoader(
        Views(data["train_images"], transform),
        batch_size=args.batch,
        shuffle=True,
        drop_last=True,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
        generator=torch.Generator().manual_seed(args.seed),
    )
    backbone, dim = resnet18(args.width)
    head = SimCLRProjectionHead(dim, dim, 128, num_layers=3, batch_norm=True)
    model = nn.Sequential(backbone, head).to(memory_format=torch.channels_last)
    decay = [p for p in model.parameters() if p.ndim > 1]
    plain = [p for p in model.parameters() if p.ndim <= 1]  # BN and biases
    peak = args.learning_rate * args.batch / 256
    optimizer = LARS(
        [{"params": decay}, {"params": plain, "weight_decay": 0.0}],
        lr=peak,
        momentum=0.9,
        weight_decay=args.weight_decay,
        trust_coefficient=0.001,
    )
    criterion = NTXentLoss(temperature=args.temperature)
    total = args.steps_per_epoch * args.epochs
    step = 0
    for epoch in range(args.epochs):
        model.train()
        losses = []
        for view1, view2 in loader:
            if step >= total:
                break
            for group in optimizer.param_groups:
                group["lr"] = schedule(step, peak, args.warmup_steps, total)
            x = torch.cat([view1, view2]).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                z = model(x)
            z1, z2 = z.float().chunk(2)
            loss = criterion(z1, z2)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
        print(
            json.dumps(
                {"epoch": epoch + 1, "step": step, "loss": float(np.mean(losses)),
                 "seconds": time.perf_counter() - start}
            ),
            flush=True,
        )  # fmt: skip
    train_seconds = time.perf_counter() - start
    h_train, z_train = features(backbone, head, data["train_eval"])
    h_test, z_test = features(backbone, head, data["test_eval"])
    np.savez(
        args.out,
        h_train=h_train,
        z_train=z_train,
        h_test=h_test,
        z_test=z_test,
        seconds=np.float64(train_seconds),
        steps=np.int64(step),
    )


if __name__ == "__main__":
    main()

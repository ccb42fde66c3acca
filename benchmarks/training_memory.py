"""Peak training memory, and what activation checkpointing of the backbone (``train.activation_checkpointing``)
saves and costs.

1. The paper's setting — DeepLabV3-ResNet-101, output stride 8, batch 8, 513² crops — and the CamVid recipe
   (MobileNetV2, OS16, batch 8, 360×480): peak tensor memory of a training step counted on fake tensors
   (``deeplab.benchmark.memory``: no data, no arithmetic, so a 2-core machine can state a figure it could not
   hold), plain and checkpointed.
2. ``--real``: the same count checked against a real step (a smaller one that fits: ResNet-101 OS8, batch 2,
   321² crops of real VOC photos and labels), each variant in its own process — peak RSS growth over the
   step, seconds per step (the recomputation's price), and the largest gradient difference between the two.

    python benchmarks/training_memory.py [--real] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "src"))

SETTINGS = [  # (name, builder kwargs, batch, crop, output stride)
    ("ResNet-101 OS8, batch 8, 513² (the paper)", {"backbone": "resnet101", "num_classes": 21}, 8, (513, 513), 8),
    ("MobileNetV2 OS16, batch 8, 360×480 (CamVid recipe)", {"backbone": "mobilenet_v2", "num_classes": 11}, 8,
     (360, 480), 16),
]
REAL = ({"backbone": "resnet101", "num_classes": 21}, 2, (321, 321), 8)

CHILD = r"""
import json, resource, sys, time, numpy as np, torch
sys.path.insert(0, {src!r})
torch.set_num_threads(2)
from deeplab.data.io import read_image, read_label
from deeplab.data.normalization import IMAGENET
from deeplab.models import deeplabv3
from deeplab.models.checkpointing import checkpoint_backbone
checkpointing, out = sys.argv[1] == "1", sys.argv[2]
kwargs, batch, size, stride = {real!r}
root = {voc!r}
ids = open(root + "/val_dev.txt").read().split()[:batch]
images = np.stack([read_image(f"{{root}}/JPEGImages/{{i}}.jpg")[:size[0], :size[1]] for i in ids])
labels = np.stack([read_label(f"{{root}}/SegmentationClass/{{i}}.png")[:size[0], :size[1]] for i in ids])
x, y = IMAGENET.to_tensor(list(images)), torch.from_numpy(labels.astype(np.int64))
torch.manual_seed(0)
model = deeplabv3(**kwargs).train()
if checkpointing:
    checkpoint_backbone(model)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
seconds = []
with model.at_output_stride(stride):
    for step in range(2):
        began = time.perf_counter()
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y, ignore_index=255).backward()
        seconds.append(time.perf_counter() - began)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
torch.save({{n: p.grad for n, p in model.named_parameters()}}, out)
print(json.dumps({{"rss_growth_mb": peak - before, "seconds": seconds[-1]}}))
"""


def fake_peaks() -> list[dict]:
    from deeplab.benchmark.memory import GIB, training_peak_bytes
    from deeplab.models import deeplabv3

    rows = []
    for name, kwargs, batch, size, stride in SETTINGS:
        row = {"setting": name}
        for checkpointing in (False, True):
            peak = training_peak_bytes(lambda: deeplabv3(**kwargs), batch=batch, size=size,
                                       num_classes=kwargs["num_classes"], output_stride=stride,
                                       checkpointing=checkpointing)
            row["checkpointed" if checkpointing else "plain"] = {k: v / GIB for k, v in peak.items()}
        row["cut"] = 1 - row["checkpointed"]["total"] / row["plain"]["total"]
        rows.append(row)
        print(f"{name}: peak {row['plain']['total']:.2f} GiB (activations {row['plain']['activation']:.2f}) → "
              f"checkpointed {row['checkpointed']['total']:.2f} GiB (activations "
              f"{row['checkpointed']['activation']:.2f}): −{100 * row['cut']:.0f} %", flush=True)
    return rows


def real_check() -> dict:
    import tempfile

    import torch

    from deeplab.benchmark.memory import training_peak_bytes
    from deeplab.models import deeplabv3

    kwargs, batch, size, stride = REAL
    code = CHILD.format(src=str(ROOT / "src"), real=REAL, voc=str(SHARED / "voc2012_val_dev"))
    result = {}
    with tempfile.TemporaryDirectory() as folder:
        for checkpointing in (False, True):
            grads = f"{folder}/{int(checkpointing)}.pt"
            done = subprocess.run([sys.executable, "-c", code, str(int(checkpointing)), grads], capture_output=True,
                                  text=True, check=True)
            measured = json.loads(done.stdout.strip().splitlines()[-1])
            counted = training_peak_bytes(lambda: deeplabv3(**kwargs), batch=batch, size=size,
                                          num_classes=kwargs["num_classes"], output_stride=stride,
                                          checkpointing=checkpointing)
            measured["counted_mb"] = (counted["total"] - counted["parameter"]) / 2**20  # parameters exist before
            result["checkpointed" if checkpointing else "plain"] = measured
        a, b = torch.load(f"{folder}/0.pt", weights_only=True), torch.load(f"{folder}/1.pt", weights_only=True)
        result["max_grad_diff"] = max(float((a[k] - b[k]).abs().max()) for k in a)
        result["max_grad"] = max(float(a[k].abs().max()) for k in a)
    plain, ckpt = result["plain"], result["checkpointed"]
    print(f"real step (ResNet-101 OS8, batch {batch}, {size[0]}², real VOC crops): RSS growth "
          f"{plain['rss_growth_mb']:.0f} → {ckpt['rss_growth_mb']:.0f} MB (counted on fake tensors: "
          f"{plain['counted_mb']:.0f} → {ckpt['counted_mb']:.0f} MB); {plain['seconds']:.1f} → "
          f"{ckpt['seconds']:.1f} s per step ({ckpt['seconds'] / plain['seconds']:.2f}×); max |Δ gradient| "
          f"{result['max_grad_diff']:.2e} (largest gradient {result['max_grad']:.2e})")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", action="store_true", help="also check the count against real steps")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from deeplab.utils.machine import describe

    print(describe())
    document = {"machine": describe(), "settings": fake_peaks()}
    if args.real:
        document["real"] = real_check()
    if args.json:
        args.json.write_text(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

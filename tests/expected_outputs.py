"""Expected-output files (torchvision's test_models recipe): one seeded tiny model per architecture family,
its logits on a seeded input committed as JSON (< 50 KB). Regenerate only on purpose, after a change that
is meant to alter outputs:

    python tests/expected_outputs.py [family ...]   # default: every family
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

EXPECTED_DIR = Path(__file__).resolve().parent / "expected"
INPUT_SHAPE = (1, 3, 25, 31)  # odd on purpose: exercises padding and the final resize
FAMILIES: dict[str, dict[str, Any]] = {
    "deeplabv3_resnet18": dict(arch="deeplabv3", backbone="resnet18", num_classes=2),
    "deeplabv3_resnet50_block6_mg121": dict(arch="deeplabv3", backbone="resnet50", num_classes=2, extra_blocks=2,
                                            multi_grid=(1, 2, 1), aspp=False),
    "deeplabv3_mobilenet_v2_mobile_aspp_os8": dict(arch="deeplabv3", backbone="mobilenet_v2", width_mult=0.5,
                                                   num_classes=2, output_stride=8, aspp_rates=()),
    "deeplabv3plus_xception65": dict(arch="deeplabv3plus", backbone="xception65", num_classes=2),
    "deeplabv3plus_resnet34_os8": dict(arch="deeplabv3plus", backbone="resnet34", num_classes=2, output_stride=8),
    "deeplabv1_vgg16": dict(arch="deeplabv1", backbone="vgg16", num_classes=2),
    "deeplabv2_resnet18_aspp_l": dict(arch="deeplabv2", backbone="resnet18", num_classes=2),
    "deeplabv3_mobilenet_v3_large": dict(arch="deeplabv3", backbone="mobilenet_v3_large", num_classes=2),
    "deeplabv3_resnet18_block5_os64": dict(arch="deeplabv3", backbone="resnet18", num_classes=2, extra_blocks=1,
                                           aspp=False, output_stride=64),
}


def compute(name: str) -> torch.Tensor:
    """Seeded model and input → eval-mode logits."""
    from deeplab.models import build_model

    torch.manual_seed(0)
    model = build_model(dict(FAMILIES[name])).eval()
    image = torch.randn(INPUT_SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model(image)


def path_for(name: str) -> Path:
    return EXPECTED_DIR / f"{name}.json"


def load(name: str) -> torch.Tensor:
    data = json.loads(path_for(name).read_text())
    return torch.tensor(data["logits"], dtype=torch.float32).reshape(data["shape"])


def regenerate(names: list[str] | None = None) -> None:
    """Write the expected logits of ``names`` (default: every family)."""
    EXPECTED_DIR.mkdir(exist_ok=True)
    for name in names or FAMILIES:
        logits = compute(name)
        values = [float(f"{v:.7g}") for v in logits.flatten().tolist()]
        path_for(name).write_text(json.dumps({"shape": list(logits.shape), "logits": values}))
        print(f"wrote {path_for(name)} ({path_for(name).stat().st_size} bytes)")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    regenerate(sys.argv[1:])

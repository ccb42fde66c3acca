"""The architecture stays as the README draws it: imports flow one way (cli → serve → export / video → training →
inference → weights / config → data → models, pictures, metrics, ... → utils), and files stay small enough to
read."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "src" / "deeplab"
# Each part of the package and its layer: a module may import its own part and any part of a lower layer,
# never a part of its own layer or above.
LAYERS = {
    "__init__": 0, "utils": 0,
    "models": 1, "metrics": 1, "losses": 1, "crf": 1, "visualize": 1,
    "data": 2,
    "config": 3, "weights": 3,
    "inference": 4,
    "training": 5,
    "export": 6, "video": 6,
    "serve": 7, "benchmark": 7,
    "cli": 8, "__main__": 9,
}
MAX_LINES = 300


def part_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imported_parts(path: Path, text: str | None = None) -> list[tuple[int, str]]:
    """(line, part) of every deeplab import in the file, function-local imports included."""
    module_parts = path.relative_to(PACKAGE).with_suffix("").parts
    found = []
    for node in ast.walk(ast.parse(path.read_text() if text is None else text)):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = list(module_parts[:-1])[: len(module_parts) - node.level]
                target = base + (node.module.split(".") if node.module else [])
                names = [target] if target else [[alias.name if alias.name in LAYERS else "__init__"]
                                                  for alias in node.names]
            elif node.module and node.module.split(".")[0] == "deeplab":
                names = [node.module.split(".")[1:] or [alias.name for alias in node.names][:1]]
            else:
                continue
            found += [(node.lineno, name[0] if name else "__init__") for name in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[1]) for alias in node.names
                      if alias.name.startswith("deeplab.")]
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_part_has_a_layer() -> None:
    assert {part_of(path) for path in SOURCES} <= set(LAYERS), "add new packages to LAYERS"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_flow_one_way(path: Path) -> None:
    own = part_of(path)
    upward = [f"line {line}: {own} (layer {LAYERS[own]}) imports {part} (layer {LAYERS[part]})"
              for line, part in imported_parts(path) if part != own and LAYERS[part] >= LAYERS[own]]
    assert not upward, upward


def test_the_checker_sees_every_kind_of_import() -> None:
    """The rule can fail: relative, absolute and function-local imports of a higher part are all seen."""
    probe = PACKAGE / "models" / "backbones" / "probe.py"
    text = "from ...training import runner\nimport deeplab.cli\ndef f():\n    from deeplab.inference import x\n" \
           "from . import base\nfrom .. import aspp\n"
    parts = sorted(part for _, part in imported_parts(probe, text))
    assert parts == ["cli", "inference", "models", "models", "training"]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_files_stay_small(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_LINES

"""What ``deeplab predict`` reads: files, folders (their images, sorted, not recursive) and glob patterns,
expanded to image paths, with the inputs that matched nothing reported rather than raised."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterable

from ..data.io import IMAGE_SUFFIXES


def expand_inputs(inputs: Iterable[str | os.PathLike], extra_suffixes: tuple[str, ...] = ()
                  ) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files, folders (their images, sorted, not recursive) and glob patterns → image paths, plus the inputs
    that matched nothing (reported as failures, not raised, so the others still run)."""
    found, missing = [], []
    for item in inputs:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES + extra_suffixes
                            and p.is_file())
            found += images
            if not images:
                missing.append((path, f"folder has no images ({', '.join(IMAGE_SUFFIXES)})"))
        elif path.is_file():
            found.append(path)
        elif any(c in text for c in "*?["):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            found += matches
            if not matches:
                missing.append((path, "pattern matched no files"))
        else:
            missing.append((path, "no such file or folder"))
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique, missing

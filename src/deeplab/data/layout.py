"""Finding and pairing files on disk: the folders of images and masks, matched by name, and split lists.

Every mistake is reported at construction with the directory, the expected pattern, counts and the first
unmatched names, so a wrong path fails in a second, not after an hour of training.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")  # lossless only: JPEG compression changes class indices
SHOW = 5  # how many unmatched names an error message lists
PathLike = str | os.PathLike


def list_files(directory: Path, suffixes: Sequence[str], what: str, recursive: bool = False) -> list[Path]:
    """The files of ``directory`` with one of ``suffixes``, sorted; hidden files skipped; none is an error."""
    if not directory.is_dir():
        raise ValueError(f"{directory}: {what} folder does not exist" if not directory.exists()
                         else f"{directory}: expected a folder of {what}, found a file")
    entries = [p for p in (directory.rglob("*") if recursive else directory.iterdir())
               if p.is_file() and not p.name.startswith(".")]  # skip .DS_Store, macOS '._x.jpg' forks
    found = sorted(p for p in entries if p.suffix.lower() in suffixes)
    if not found:
        pattern = "|".join(f"*{s}" for s in suffixes)
        others = sorted(p.name for p in entries)
        detail = (f"found {len(others)} other file(s): {', '.join(others[:SHOW])}" if others else "it is empty")
        raise ValueError(f"{directory}: no {what} matching {pattern}; {detail}")
    return found


def by_stem(files: list[Path], directory: Path, what: str, key: Callable[[Path], str] = lambda p: p.stem
             ) -> dict[str, Path]:
    """``{key(path): path}``; two files with one key (``a.jpg`` and ``a.png``) are an error."""
    table: dict[str, Path] = {}
    for path in files:
        name = key(path)
        if name in table:
            raise ValueError(f"{directory}: two {what} share the name {name!r}: {table[name].name}, {path.name}")
        table[name] = path
    return table


def unmatched(names: Sequence[str], total: int, what: str, where: Path, pattern: str) -> ValueError:
    shown = ", ".join(sorted(names)[:SHOW]) + (" ..." if len(names) > SHOW else "")
    return ValueError(f"{where}: {len(names)} of {total} {what} have no match for {pattern} (first: {shown})")


def read_split_file(path: PathLike) -> list[str]:
    """Ids from a split list: one per line, or VOC/SBD-style 'JPEGImages/x.jpg SegmentationClassAug/x.png'."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: split list file does not exist")
    ids = [Path(line.split()[0]).stem for line in path.read_text(encoding="utf-8").splitlines()
           if line.strip() and not line.lstrip().startswith("#")]
    if not ids:
        raise ValueError(f"{path}: split list file has no ids")
    return ids


def match_pairs(images: dict[str, Path], masks: dict[str, Path] | None, *, images_dir: Path,
                masks_dir: Path | None, image_pattern: str, mask_pattern: str,
                ids: Sequence[str] | None = None, split_file: Path | None = None) -> list[tuple[Path, Path | None]]:
    """Pair images and masks by key; every unmatched name (either way) is an error."""
    if ids is not None:
        missing = [i for i in ids if i not in images]
        if missing:
            raise unmatched(missing, len(ids), f"ids in {split_file}", images_dir, image_pattern)
        keys = list(dict.fromkeys(ids))
    else:
        keys = sorted(images)
    if masks is None:
        return [(images[k], None) for k in keys]
    no_mask = [images[k].name for k in keys if k not in masks]
    if no_mask:
        raise unmatched(no_mask, len(keys), f"images in {images_dir}", masks_dir, mask_pattern)
    if ids is None:
        no_image = [p.name for k, p in masks.items() if k not in images]
        if no_image:
            raise unmatched(no_image, len(masks), f"masks in {masks_dir}", images_dir, image_pattern)
    return [(images[k], masks[k]) for k in keys]


def check_mask_suffixes(masks_dir: Path) -> None:
    lossy = sorted(p.name for p in masks_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    if lossy:
        raise ValueError(f"{masks_dir}: {len(lossy)} JPEG mask(s) (first: {', '.join(lossy[:SHOW])}); JPEG "
                         "compression changes class indices at every edge: save masks as PNG")

"""Crash-safe file writes: write a temporary file beside the target, fsync, then rename.

A kill at any moment leaves either the old file or the new one under the final name, never a truncated one,
so a checkpoint or a prediction a user relies on is never half-written.
"""

from __future__ import annotations

import io
import os
import tempfile

NEW_FILE_MODE = 0o666  # what open() asks for; the umask takes its bits away
from pathlib import Path
from typing import Any, Callable

import torch


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None]) -> Path:
    """Call ``write(file)`` on a temporary file in the target's folder, then rename it into place. The file
    gets the permissions any new file gets (0666 less the umask), not the temporary file's private 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_name = temporary_beside(path)
    try:
        with open(tmp_name, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def temporary_beside(path: Path) -> Path:
    """A new, empty temporary file in ``path``'s folder (so a rename onto ``path`` is atomic), with the
    umask's permissions."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp_name, NEW_FILE_MODE & ~current_umask())
    return Path(tmp_name)


def current_umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class OutputGroup:
    """Files that must appear together or not at all (one image's label PNG, overlay, probabilities, areas).

    Each is written to a temporary file beside its target (``path_for`` / ``write_bytes``); ``commit`` renames
    them into place, the ``last`` one last — so a kill leaves either no output, or outputs with the last one
    missing, which a re-run recognises as unfinished; ``abort`` (or an exception inside ``with``) removes the
    temporary files and leaves the targets as they were.
    """

    def __init__(self) -> None:
        self.pending: dict[Path, Path] = {}  # target → temporary file

    def path_for(self, target: str | os.PathLike) -> Path:
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        self.pending[target] = temporary_beside(target)
        return self.pending[target]

    def write_bytes(self, target: str | os.PathLike, data: bytes) -> None:
        with open(self.path_for(target), "wb") as handle:
            handle.write(data)

    def commit(self, last: str | os.PathLike | None = None) -> list[Path]:
        order = sorted(self.pending, key=lambda target: last is not None and target == Path(last))
        for target in order:
            with open(self.pending[target], "rb+") as handle:
                os.fsync(handle.fileno())
        for target in order:
            os.replace(self.pending[target], target)
        for folder in {target.parent for target in order}:
            _fsync_dir(folder)
        self.pending.clear()
        return order

    def abort(self) -> None:
        for temporary in self.pending.values():
            temporary.unlink(missing_ok=True)
        self.pending.clear()

    def __enter__(self) -> "OutputGroup":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is not None:
            self.abort()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` that never leaves a half-written file under ``path``."""
    return atomic_write(path, lambda handle: torch.save(obj, handle))


def ensure_writable_dir(folder: str | os.PathLike, *, keep: bool = True) -> Path:
    """Create ``folder`` if needed and prove it is writable, so a long job fails before its work, not after.
    ``keep=False`` removes the folders the probe created again (a job that may still be refused leaves
    nothing behind; it creates its folder when its work starts)."""
    folder = Path(folder)
    created = [p for p in [folder, *folder.parents] if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # a probe name of this process's own: ranks probing one folder at once must not delete each other's
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".deeplab-write-test-"):
            pass
    except OSError as error:
        raise OSError(f"{folder}: output folder is not writable ({error.strerror or error})") from None
    finally:
        if not keep:
            for path in created:  # deepest first
                if path.is_dir() and not any(path.iterdir()):
                    path.rmdir()
    return folder


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible on every platform/filesystem, hence best effort.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

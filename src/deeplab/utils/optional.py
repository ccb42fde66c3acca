"""Optional dependencies (ONNX, ONNX Runtime, the TFLite parser, the dense CRF, ...), imported when first used so
the core never needs them, with a one-line message that names the extra to install."""

from __future__ import annotations

import importlib
from typing import Any


class MissingDependencyError(ImportError):
    """An optional dependency is not installed; the message says which extra installs it."""


def require(module: str, extra: str) -> Any:
    """Import ``module`` or raise ``MissingDependencyError`` saying ``pip install 'deeplab[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(f"{module} is not installed; install it with: pip install 'deeplab[{extra}]'"
                                     ) from None

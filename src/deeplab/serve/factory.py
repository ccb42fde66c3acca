"""The app ``uvicorn`` builds in each server process, from the settings ``deeplab serve`` put in the
environment (uvicorn's worker processes take an import string, not objects). Compute threads are this
process's share of the cores, so ``--workers N`` processes never oversubscribe them."""

from __future__ import annotations

import ast
import os

from fastapi import FastAPI

from .app import create_app
from .settings import ServeSettings


def app_from_environment() -> FastAPI:
    import torch

    config = ast.literal_eval(os.environ["DEEPLAB_SERVE_CONFIG"])
    workers = config.pop("workers")
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    weights, backend, device = config.pop("weights"), config.pop("backend"), config.pop("device")
    precision, calibration = config.pop("precision", "fp32"), config.pop("calibration", None)
    return create_app(weights, ServeSettings(**config), backend=backend, precision=precision, device=device,
                      calibration=calibration)

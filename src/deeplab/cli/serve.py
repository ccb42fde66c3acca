"""``deeplab serve``: the model behind an HTTP API and a web page (``pip install 'deeplab[serve]'``).

    deeplab serve -w model.safetensors [--host 127.0.0.1] [--port 8000] [--workers 1]
                  [--max-batch 4] [--max-wait-ms 10] [--queue 16] [--max-body-mb 20] [--max-megapixels 4.2]

SIGTERM (or Ctrl-C) stops accepting connections, finishes the requests in flight, then exits 0. With
``--workers N`` each process loads the model and gets 1/N of the CPU cores for its compute threads, so the
processes never oversubscribe the cores.
"""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

from .common import megapixels, positive_int

ENV_PREFIX = "DEEPLAB_SERVE_"


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("serve", help="serve the model over HTTP (API + web page)")
    parser.add_argument("-w", "--weights", required=True, help="any model file -w takes elsewhere")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=positive_int, default=8000)
    parser.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="fp32",
                        help="bf16: on CPUs with AVX512-BF16/AMX; int8: ONNX Runtime (default) or --backend openvino, "
                             "calibrated on --calibration (see deeplab benchmark)")
    parser.add_argument("--calibration", type=Path, default=None, metavar="FOLDER",
                        help="int8: images like the ones to segment (the first 16 of the folder, or one file)")
    parser.add_argument("--backend", choices=("torch", "onnxruntime", "openvino"), default=None,
                        help="default: onnxruntime for .onnx files, torch otherwise")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=positive_int, default=1, help="server processes (each loads the model)")
    parser.add_argument("--max-batch", type=positive_int, default=4, help="images per forward pass")
    parser.add_argument("--max-wait-ms", type=float, default=10.0, help="how long a batch waits for company")
    parser.add_argument("--queue", type=positive_int, default=16, help="waiting requests before 503")
    parser.add_argument("--max-body-mb", type=float, default=20.0, help="request body limit")
    parser.add_argument("--max-megapixels", type=megapixels, default=2048 * 2048 / 1e6, help="image size limit")
    parser.add_argument("--max-scales", type=positive_int, default=6, help="test-time scales a request may ask for")
    parser.add_argument("--no-flip", action="store_true", help="refuse flip=true requests")
    parser.add_argument("--max-video-seconds", type=float, default=20.0)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ..utils.optional import require

    require("fastapi", "serve")
    settings = {"max_body_bytes": int(args.max_body_mb * (1 << 20)), "max_pixels": int(args.max_megapixels * 1e6),
                "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms, "queue_size": args.queue,
                "max_scales": args.max_scales, "allow_flip": not args.no_flip,
                "max_video_seconds": args.max_video_seconds}
    from ..serve.settings import ServeSettings

    ServeSettings(**settings)  # bad limits fail here, in one line, before any process starts
    from ..export.runtimes import check_precision_supported

    check_precision_supported(args.precision)
    if not os.path.isfile(args.weights):
        raise FileNotFoundError(f"{args.weights}: no such model file")
    calibration = None
    if args.precision == "int8":
        from ..data.normalization import IMAGENET
        from ..export.quantize import calibration_for, check_int8_path

        check_int8_path(args.backend, onnx_file=args.weights.endswith(".onnx"))
        calibration_for(args.calibration, IMAGENET, required=True)  # a bad folder fails here, in one line
        calibration = os.path.abspath(args.calibration)
    os.environ[f"{ENV_PREFIX}CONFIG"] = repr({"weights": os.path.abspath(args.weights), "backend": args.backend,
                                              "precision": args.precision, "calibration": calibration,
                                              "device": args.device, "workers": args.workers, **settings})
    options = dict(factory=True, host=args.host, port=args.port, timeout_graceful_shutdown=60, log_level="info")
    if args.workers > 1:  # uvicorn's supervisor: it restarts a worker that dies
        uvicorn.run("deeplab.serve.factory:app_from_environment", workers=args.workers, **options)
        return 0
    _serve_until_sigterm(uvicorn.Config("deeplab.serve.factory:app_from_environment", **options))
    return 0


def _serve_until_sigterm(config) -> None:
    """One server process. uvicorn re-raises a SIGTERM after its graceful shutdown, so the process would die
    of the signal; a shutdown that finished every request is a success, so this one returns (exit 0)."""
    import uvicorn

    class GracefulServer(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            self.force_exit = self.should_exit and sig == signal.SIGINT  # a second Ctrl-C: stop now
            self.should_exit = True

    GracefulServer(config).run()

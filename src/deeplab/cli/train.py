"""``deeplab train``: train per a YAML config with dotted overrides; resumes from the run's newest checkpoint.

    deeplab train -c configs/camvid_mobilenetv2.yaml [--set train.lr=0.01 ...] [--resume PATH|--fresh]
    torchrun --nproc-per-node 2 -m deeplab train -c ...      # DDP (gloo on CPU, NCCL on GPU)
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("train", help="train a model from a config file")
    parser.add_argument("-c", "--config", required=True, help="experiment YAML (see configs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.lr=0.01 (repeatable)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume", metavar="CHECKPOINT", help="resume from this checkpoint")
    start.add_argument("--fresh", action="store_true",
                       help="start from step 0; refuses a run folder that already holds checkpoints "
                            "(choose another name or output_dir)")
    parser.add_argument("--no-check", action="store_true", help="skip the pre-training dataset scan")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (e.g. in logs)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..training.engine import TrainingDiverged
    from ..training.runner import run_training
    from ..utils.distributed import PeerFailure

    config = load_config(args.config, args.overrides)
    resume = None if args.fresh else (args.resume or "auto")
    try:
        result = run_training(config, resume=resume, progress=not args.no_progress, check_data=not args.no_check)
    except TrainingDiverged as error:  # not a traceback: the message says the step, loss, lr and what to do
        print(f"deeplab train: diverged: {error}", file=sys.stderr)
        return 1
    except PeerFailure as error:
        print(f"deeplab train: distributed run failed: {error}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 reports
        print(json.dumps({k: v for k, v in result.items() if k != "per_class"}, indent=2, default=float))
    return 0

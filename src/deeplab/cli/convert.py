"""``deeplab convert``: turn a foreign model file into a self-describing deeplab model file.

    deeplab convert ../shared/data/weights/deeplabv3_257_mv_gpu.tflite mobile_voc.safetensors
    deeplab convert deeplabv3_resnet50_coco-cd0a2569.pth resnet50_voc.pt

Accepts what ``--weights`` accepts elsewhere except ONNX (a graph, not weights): the authors' ``.tflite``,
a torchvision DeepLabV3 state dict, or a deeplab file (e.g. a training checkpoint → a small model file
without the optimizer state). The output carries the model card (config, classes, normalisation), so
``deeplab predict -w OUT`` and ``load_model(OUT)`` need nothing else.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("convert", help="convert .tflite / torchvision / checkpoint files to a model file")
    parser.add_argument("source", type=Path, help=".tflite, torchvision .pth, or a deeplab checkpoint")
    parser.add_argument("output", type=Path, help="model file to write (.safetensors or .pt)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..inference.loading import load_any
    from ..weights.modelfile import load_model, save_model

    if args.output.suffix not in (".safetensors", ".pt", ".pth"):
        raise ValueError(f"{args.output}: choose a .safetensors or .pt output")
    if args.output.exists() and not args.force:
        raise FileExistsError(f"{args.output} exists (pass --force to overwrite)")
    loaded = load_any(args.source)
    if loaded.model is None:
        raise ValueError(f"{args.source}: an exported {loaded.kind} graph holds no convertible weights")
    save_model(loaded.model, args.output, loaded.card)
    model, card = load_model(args.output)  # prove the file rebuilds on its own
    parameters = sum(p.numel() for p in model.parameters())
    print(f"{args.source} ({loaded.kind}) -> {args.output}: {model.config['arch']} {model.config['backbone']}, "
          f"output stride {model.output_stride}, {card.num_classes} classes, {parameters:,} parameters")
    return 0

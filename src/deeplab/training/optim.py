"""SGD with the paper's poly schedule, batch-norm settings and the freeze-BN mode of the second stage."""

from __future__ import annotations

from torch import nn
from torch.optim import SGD, Optimizer
from torch.optim.lr_scheduler import LambdaLR

BN_TYPES = (nn.BatchNorm2d, nn.SyncBatchNorm)


def poly_factor(iteration: int, max_iterations: int, power: float = 0.9, warmup: int = 0) -> float:
    """``(1 − iter/max_iter)^power`` (paper §4.1), after an optional linear warmup."""
    if warmup and iteration < warmup:
        return (iteration + 1) / warmup
    return max(0.0, 1.0 - iteration / max_iterations) ** power


def build_optimizer(model: nn.Module, *, lr: float, momentum: float, weight_decay: float,
                    classifier_lr_mult: float = 1.0) -> SGD:
    """SGD; weight decay on conv/linear weights only — BN parameters and biases are not decayed (as in the
    authors' TF code, where the regulariser is attached to weights). ``classifier_lr_mult`` scales the learning
    rate of the head (``classifier.*``, ``aux_classifier.*``): DeepLab v1/v2 trained their new fc8 at 10×."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for prefix, module in model.named_modules():
        head = prefix.split(".")[0] in ("classifier", "aux_classifier") or prefix.startswith("module.classifier")
        for name, param in module.named_parameters(recurse=False):
            if param.requires_grad:
                decayed = not (isinstance(module, BN_TYPES) or name == "bias")
                groups.setdefault((head, decayed), []).append(param)
    order = [(False, True), (False, False), (True, True), (True, False)]
    return SGD([{"params": groups[key], "weight_decay": weight_decay if key[1] else 0.0,
                 "lr": lr * (classifier_lr_mult if key[0] else 1.0)} for key in order if key in groups],
               lr=lr, momentum=momentum)


def build_scheduler(optimizer: Optimizer, *, max_iterations: int, power: float, warmup: int) -> LambdaLR:
    """Stepped once per iteration."""
    return LambdaLR(optimizer, lambda it: poly_factor(it, max_iterations, power, warmup))


def set_bn_momentum(model: nn.Module, momentum: float) -> None:
    """PyTorch's BN momentum is 1 − TF's decay: the paper's decay 0.9997 is momentum 0.0003."""
    for module in model.modules():
        if isinstance(module, BN_TYPES):
            module.momentum = momentum


def freeze_batch_norm(model: nn.Module) -> int:
    """Freeze every BN layer (statistics and affine parameters), as the paper's OS8 fine-tuning stage does.

    Must be re-applied after each ``model.train()`` call, since that sets BN back to training mode; returns
    the number of frozen layers.
    """
    count = 0
    for module in model.modules():
        if isinstance(module, BN_TYPES):
            module.eval()
            for param in module.parameters():
                param.requires_grad_(False)
            count += 1
    return count

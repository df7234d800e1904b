"""Inference-only rewrites of the trained towers: BatchNorm folded into the preceding conv and
channels-last memory layout. Same function, fewer memory passes; the trained module (and its
official state_dict layout) is left untouched because the rewrite works on a copy."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .clip import CLIPBottleneck, ModifiedResNet
from .esresnext import Attention2d, Bottleneck, ESResNeXtFBSP

_PAIRS = {
    Bottleneck: (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
    CLIPBottleneck: (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
    Attention2d: (("conv_point", "bn"),),
    ESResNeXtFBSP: (("conv1", "bn1"),),
    ModifiedResNet: (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
}


def _fold_pairs(module: nn.Module, pairs: tuple[tuple[str, str], ...]) -> None:
    for conv_name, bn_name in pairs:
        conv, bn = getattr(module, conv_name), getattr(module, bn_name)
        if isinstance(bn, nn.BatchNorm2d):
            setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
            setattr(module, bn_name, nn.Identity())


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm of our towers into its conv, in place; returns the module."""
    for sub in list(module.modules()):
        pairs = _PAIRS.get(type(sub))
        if pairs:
            _fold_pairs(sub, pairs)
        downsample = getattr(sub, "downsample", None)
        if isinstance(downsample, nn.Sequential):
            convs = [i for i, m in enumerate(downsample) if isinstance(m, nn.Conv2d)]
            for i in convs:
                if i + 1 < len(downsample) and isinstance(downsample[i + 1], nn.BatchNorm2d):
                    downsample[i] = fuse_conv_bn_eval(downsample[i], downsample[i + 1])
                    downsample[i + 1] = nn.Identity()
    return module


def inference_copy(module: nn.Module) -> nn.Module:
    """An eval-mode copy with BatchNorm folded, in channels-last layout, gradients off."""
    fast = copy.deepcopy(module).eval()
    fold_batchnorm(fast)
    fast = fast.to(memory_format=torch.channels_last)
    for p in fast.parameters():
        p.requires_grad_(False)
    return fast

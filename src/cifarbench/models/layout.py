"""Layout fixes for torchvision models trained in channels_last: same parameters, bit-identical outputs.

torchvision's ShuffleNetV2 ends every block with ``channel_shuffle``, whose ``.contiguous()`` turns a
channels_last tensor back into NCHW. The next convolution then converts it again, and ReLU's backward runs
on mixed layouts: measured at 1 thread on the CPU, channels_last gave 1.24x over NCHW with torchvision's
shuffle and 1.54x with the shuffle below (``benchmarks/cpu_levers.py --levers fp32 cl cl+nhwcshuffle``).
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models.shufflenetv2 import InvertedResidual
from torchvision.models.shufflenetv2 import channel_shuffle as torchvision_channel_shuffle


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """torchvision's channel shuffle, done in NHWC when ``x`` is channels_last (and so kept channels_last)."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        b, c, h, w = x.shape
        y = x.permute(0, 2, 3, 1).reshape(b, h, w, groups, c // groups).transpose(3, 4).reshape(b, h, w, c)
        return y.permute(0, 3, 1, 2)  # an NCHW view with channels_last strides
    return torchvision_channel_shuffle(x, groups)


class ShuffleBlock(InvertedResidual):
    """torchvision's ShuffleNetV2 block (same modules and state_dict keys) with a layout-keeping shuffle."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


def keep_channels_last(model: nn.Module, enable: bool = True) -> nn.Module:
    """Swap ShuffleNetV2 blocks to ShuffleBlock in place (``enable=False`` swaps them back)."""
    for m in model.modules():
        if isinstance(m, InvertedResidual):
            m.__class__ = ShuffleBlock if enable else InvertedResidual
    return model

"""Public depthwise large-kernel convolution API (placeholder: PyTorch backend only).

The ops issue replaces the internals with a dispatcher over C++ / Triton / PyTorch backends; the
signatures here are the contract the models rely on.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_KERNEL_SIDE = 151


def _check(x, weight, bias, name='weight'):
    if x.dim() != 4:
        raise ValueError(f'x must be 4-D (N, C, H, W), got shape {tuple(x.shape)}')
    if not x.is_floating_point():
        raise ValueError(f'x must be a floating-point tensor, got {x.dtype}')
    channels = x.shape[1]
    if weight.dim() != 4 or weight.shape[0] != channels or weight.shape[1] != 1:
        raise ValueError(f'{name} must have shape (C, 1, kh, kw) with C={channels} (channels of x), '
                         f'got {tuple(weight.shape)}')
    for side in weight.shape[2:]:
        if side % 2 == 0 or not 1 <= side <= MAX_KERNEL_SIDE:
            raise ValueError(f'{name} kernel sides must be odd and in 1..{MAX_KERNEL_SIDE}, got '
                             f'{tuple(weight.shape[2:])}')
    if bias is not None and tuple(bias.shape) != (channels, ):
        raise ValueError(f'bias must have shape ({channels},), got {tuple(bias.shape)}')


def depthwise_conv2d(x, weight, bias=None):
    """Depthwise 'same' convolution, equal to ``F.conv2d(x, weight, bias, padding=(kh//2, kw//2), groups=C)``.

    Args:
        x (Tensor): input (N, C, H, W), contiguous or channels_last.
        weight (Tensor): kernels (C, 1, kh, kw), kh and kw odd in 1..151.
        bias (Tensor, optional): (C,).
    """
    _check(x, weight, bias)
    kh, kw = weight.shape[2:]
    return F.conv2d(x, weight, bias, padding=(kh // 2, kw // 2), groups=x.shape[1])


def decomposed_depthwise_conv2d(x, w_long, w_wide, w_small=None, bias=None):
    """Sum of the 'same' depthwise convolutions with kernels (K, n), (n, K) and optionally (n, n)."""
    _check(x, w_long, bias, 'w_long')
    _check(x, w_wide, None, 'w_wide')
    out = depthwise_conv2d(x, w_long, bias) + depthwise_conv2d(x, w_wide)
    if w_small is not None:
        _check(x, w_small, None, 'w_small')
        out = out + depthwise_conv2d(x, w_small)
    return out


class LargeKernelDepthwiseConv2d(nn.Module):
    """Depthwise 'same' convolution module whose ``weight`` has ``nn.Conv2d(C, C, k, groups=C)``'s shape."""

    def __init__(self, channels, kernel_size, bias=False):
        super().__init__()
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        self.channels = channels
        self.kernel_size = (kh, kw)
        self.weight = nn.Parameter(torch.empty(channels, 1, kh, kw))
        self.bias = nn.Parameter(torch.empty(channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.kernel_size[0] * self.kernel_size[1])
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        return depthwise_conv2d(x, self.weight, self.bias)

    def extra_repr(self):
        return f'{self.channels}, kernel_size={self.kernel_size}, bias={self.bias is not None}'

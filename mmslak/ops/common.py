"""Input validation and memory-format helpers shared by the op families of :mod:`mmslak.ops`.

The public ops check their inputs here before any backend sees them, so every backend gets the same
well-formed tensors and every user gets the same one-line ``ValueError`` naming what to fix.
"""
from typing import Optional

import torch
from torch import Tensor

# Device types the custom ops register kernels for; other devices are refused by torch.library.
OP_DEVICES = ('cpu', 'cuda')
MAX_KERNEL_SIDE = 151


def _describe(value) -> str:
    return str(tuple(value.shape)) if isinstance(value, Tensor) else type(value).__name__


def check_input(x: Tensor):
    """Raise ValueError unless ``x`` is a 4-D (N, C, H, W) floating-point tensor."""
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(f'x must be a 4-D tensor (N, C, H, W), got {_describe(x)}')
    if not x.is_floating_point():
        raise ValueError(f'x must be a floating-point tensor, got {x.dtype}')


def check_weight(x: Tensor, weight: Tensor, name: str, shape_text: str):
    """Raise ValueError unless ``weight`` is a depthwise kernel (C, 1, ., .) matching ``x``.

    Args:
        x (Tensor): the checked input (N, C, H, W).
        weight (Tensor): the kernel to check.
        name (str): the argument name used in messages (``'weight'``, ``'w_long'``, ...).
        shape_text (str): the expected shape as the message writes it, e.g. ``'(C, 1, kh, kw)'``.
    """
    if not isinstance(weight, Tensor) or weight.dim() != 4 or weight.shape[1] != 1:
        raise ValueError(f'{name} must have shape {shape_text}, got {_describe(weight)}')
    if weight.shape[0] != x.shape[1]:
        raise ValueError(f'{name} has {weight.shape[0]} channels but x has {x.shape[1]}: a depthwise '
                         f'{name} must have shape {shape_text} with C = x.shape[1]')
    check_dtype_and_device(x, weight, name)


def check_kernel_sides(kernel, name: str):
    """Raise ValueError unless every side of ``kernel`` is odd and in 1..MAX_KERNEL_SIDE."""
    if any(side % 2 == 0 or not 1 <= side <= MAX_KERNEL_SIDE for side in kernel):
        raise ValueError(f'{name} sides must be odd and in 1..{MAX_KERNEL_SIDE} for a "same" '
                         f'convolution, got {tuple(kernel)}')


def check_bias(x: Tensor, bias: Optional[Tensor]):
    """Raise ValueError unless ``bias`` is None or a (C,) tensor with the dtype and device of ``x``."""
    if bias is None:
        return
    if not isinstance(bias, Tensor) or tuple(bias.shape) != (x.shape[1], ):
        raise ValueError(f'bias must have shape ({x.shape[1]},), got {_describe(bias)}')
    check_dtype_and_device(x, bias, 'bias')


def check_dtype_and_device(x: Tensor, tensor: Tensor, name: str):
    if tensor.dtype != x.dtype or tensor.device != x.device:
        raise ValueError(f'{name} must have the dtype and device of x ({x.dtype}, {x.device}), got '
                         f'{tensor.dtype}, {tensor.device}')


def memory_format_of(x: Tensor) -> torch.memory_format:
    """channels_last when x is laid out so (and not also plain contiguous), else contiguous."""
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def in_layout_of(x: Tensor, result: Tensor) -> Tensor:
    """``result`` in the memory format of ``x``: the layout the fake kernels promise."""
    return result.contiguous(memory_format=memory_format_of(x))


def empty_in_layout_of(x: Tensor) -> Tensor:
    """An uninitialised tensor with the shape, dtype, device and memory format of ``x``."""
    return torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=memory_format_of(x))

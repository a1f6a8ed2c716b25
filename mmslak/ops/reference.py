"""PyTorch backend of the depthwise 'same' convolutions: ``F.conv2d`` and ATen's convolution backward.

Works for every device and floating dtype, so the models run without the C++ extension and without
Triton. It is also the backend the dispatcher falls back to when another backend refuses an input.
Results keep the memory format of ``x`` (contiguous or channels_last), like ``F.conv2d``.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def supports(x: Tensor, *weights: Tensor) -> Tuple[bool, str]:
    """The PyTorch backend takes every input the public API accepts."""
    return True, ''


def _same_padding(weight: Tensor) -> Tuple[int, int]:
    return weight.shape[2] // 2, weight.shape[3] // 2


def dwconv2d_forward(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    return F.conv2d(x, weight, bias, padding=_same_padding(weight), groups=x.shape[1])


def dwconv2d_backward(grad_out: Tensor, x: Tensor, weight: Tensor, need_input: bool,
                      need_weight: bool) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
        grad_out, x, weight, None, [1, 1], list(_same_padding(weight)), [1, 1], False, [0, 0],
        x.shape[1], [need_input, need_weight, False])
    return grad_x, grad_w


def _branches(w_long: Tensor, w_wide: Tensor, w_small: Optional[Tensor]) -> Sequence[Tensor]:
    return [w for w in (w_long, w_wide, w_small) if w is not None]


def decomposed_forward(x: Tensor, w_long: Tensor, w_wide: Tensor, w_small: Optional[Tensor],
                       bias: Optional[Tensor]) -> Tensor:
    out = dwconv2d_forward(x, w_long, bias)
    for weight in _branches(None, w_wide, w_small):
        out = out + dwconv2d_forward(x, weight, None)
    return out


def decomposed_backward(grad_out: Tensor, x: Tensor, w_long: Tensor, w_wide: Tensor,
                        w_small: Optional[Tensor], need_input: bool, need_weight: bool):
    grad_x = None
    grad_ws = []
    for weight in _branches(w_long, w_wide, w_small):
        branch_grad_x, branch_grad_w = dwconv2d_backward(grad_out, x, weight, need_input, need_weight)
        if need_input:
            grad_x = branch_grad_x if grad_x is None else grad_x + branch_grad_x
        grad_ws.append(branch_grad_w)
    if w_small is None:
        grad_ws.append(None)
    return (grad_x, *grad_ws)

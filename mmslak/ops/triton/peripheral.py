"""Triton backend of the peripheral depthwise convolution (see :mod:`mmslak.ops.peripheral`).

Runs on CUDA tensors, or on CPU tensors under the Triton interpreter (``TRITON_INTERPRET=1``), for
float32, float16 and bfloat16 (accumulated in float32) and float64. Autograd is the caller's business:
these are plain functions, the input gradient being the forward with the reversed grid and the flipped
weight. Ask :func:`triton_peripheral_supports` before calling them.
"""
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from .dwconv import accumulator_dtype, triton_supports

BLOCK_Q = 64  # output columns per program
GRAD_WEIGHT_BLOCK_P = 64  # positions per tl.dot step of the weight gradient


def _kernels():
    from . import peripheral_kernels
    return peripheral_kernels


def _acc_dtype(dtype: torch.dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _offsets(grid: Sequence[int], device) -> Tensor:
    """k' + 1 cell boundaries (int32) for the kernels' loop bounds."""
    bounds = [0]
    for width in grid:
        bounds.append(bounds[-1] + width)
    return torch.tensor(bounds, dtype=torch.int32, device=device)


def _column_blocks(width: int) -> int:
    return -(-width // BLOCK_Q)


def _block_cells(cells: int) -> int:
    return max(16, 1 << (cells - 1).bit_length())  # a power of 2, and tl.dot needs 16 or more


def triton_peripheral_supports(x: Tensor, *tensors: Optional[Tensor]) -> Tuple[bool, str]:
    """Whether the Triton kernels can run on ``x`` and the other tensors of the call (same device, dtype)."""
    ok, reason = triton_supports(x)
    if not ok:
        return ok, reason
    for tensor in tensors:
        if tensor is not None and (tensor.device != x.device or tensor.dtype != x.dtype):
            return False, (f'all tensors must be on the device and of the dtype of x ({x.device}, '
                           f'{x.dtype}), got {tensor.device}, {tensor.dtype}')
    return True, ''


def _row_boxes(x: Tensor, weight: Optional[Tensor], grid: Sequence[int]) -> Tensor:
    """(k', N, C, H, W): the rows of each cell summed, mixed by ``weight`` when it is given."""
    n, c, h, w = x.shape
    cells = len(grid)
    out = x.new_empty((cells, n, c, h, w), dtype=_acc_dtype(x.dtype))
    if out.numel():
        _kernels().row_box_kernel[(n * c * h, _column_blocks(w))](
            x, x if weight is None else weight.contiguous(), _offsets(grid, x.device), out, c, h, w, cells,
            sum(grid) // 2, n * c * h * w, MIX=weight is not None, ACC_DTYPE=accumulator_dtype(x.dtype),
            BLOCK_CELLS=_block_cells(cells), BLOCK_Q=BLOCK_Q)
    return out


def _col_boxes(t: Tensor, grid: Sequence[int], out: Tensor, bias: Optional[Tensor] = None,
               sum_cells: bool = False) -> Tensor:
    n, c, h, w = out.shape[-4:]
    if out.numel():
        _kernels().col_box_kernel[(n * c * h, _column_blocks(w))](
            t, _offsets(grid, t.device), out if bias is None else bias, out, c, h, w, len(grid),
            sum(grid) // 2, n * c * h * w, SUM=sum_cells, HAS_BIAS=bias is not None,
            ACC_DTYPE=accumulator_dtype(out.dtype), BLOCK_Q=BLOCK_Q)
    return out


def triton_peripheral_forward(x: Tensor, weight: Tensor, grid: Sequence[int],
                              bias: Optional[Tensor] = None) -> Tensor:
    """Peripheral 'same' depthwise convolution (NCHW result; the caller restores the layout of x)."""
    x = x.contiguous()
    mixed = _row_boxes(x, weight, grid)
    return _col_boxes(mixed, grid, torch.empty_like(x), bias, sum_cells=True)


def triton_peripheral_grad_weight(grad_out: Tensor, x: Tensor, grid: Sequence[int]) -> Tensor:
    """Gradient of the peripheral convolution with respect to its (C, 1, k', k') weight."""
    x, grad_out = x.contiguous(), grad_out.contiguous()
    n, c, h, w = x.shape
    cells = len(grid)
    row_boxes = _row_boxes(x, None, grid)
    # G_b[q] = Σ_{j in cell b} g[q - j]: the column box of the reversed grid's cell k'-1-b.
    col_boxes = _col_boxes(grad_out, list(reversed(grid)), row_boxes.new_empty(row_boxes.shape)).flip(0)
    col_boxes = col_boxes.contiguous()
    grad_w = x.new_zeros((c, 1, cells, cells), dtype=_acc_dtype(x.dtype))
    if row_boxes.numel():
        _kernels().grad_weight_kernel[(c, )](
            row_boxes, col_boxes, grad_w, n, c, h * w, cells, n * c * h * w, ACC_DTYPE=accumulator_dtype(x.dtype),
            BLOCK_CELLS=_block_cells(cells), BLOCK_P=GRAD_WEIGHT_BLOCK_P)
    return grad_w.to(x.dtype)


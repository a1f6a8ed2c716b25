"""Peripheral depthwise convolution: the fast exact path for piecewise-constant kernels (PeLK).

PeLK (`Parameter-efficient Large Kernel ConvNets with Peripheral Convolution
<https://arxiv.org/abs/2403.07589>`_) shares the weights of a K×K depthwise kernel over the cells of a
grid: a parameter kernel ``w`` of size k'×k' and a list of k' cell widths that sum to K (applied to both
axes) define the expanded kernel ``E[i, j] = w[a(i), b(j)]``, where ``a(i)`` is the cell holding row ``i``.

A convolution with such a kernel is a weighted sum of box filters, one per cell, and box filters are
separable. So per output pixel the cost is about k'² multiply-adds instead of K² (13² = 169 instead of
51² = 2601; 17² instead of 101²), and the dense K×K kernel is never built:

1. ``R_a = box over the rows of cell a`` of the input (zero padded, along H);
2. ``T_b = Σ_a w[a, b] · R_a`` (k'² multiply-adds per pixel);
3. ``y = Σ_b box over the columns of cell b`` of ``T_b`` (along W).

The gradient with respect to the input is the same operation with the reversed grid and the flipped
weight (the adjoint of a correlation is the correlation with the flipped kernel). The gradient with
respect to ``w[a, b]`` is ``Σ R_a · G_b`` where ``G_b`` is the column box of the output gradient for the
reversed cell: again k'² multiply-adds per pixel.

Backends (:data:`PERIPHERAL_BACKENDS`, picked per call by :mod:`mmslak.ops.dispatch`): C++ CPU kernels in
``mmslak._ext`` (float32/float64, OpenMP over planes, AVX-512 or AVX2 along W), Triton kernels for CUDA tensors (:mod:`mmslak.ops.triton.peripheral`),
and the PyTorch implementation of the same algorithm below (cumulative sums accumulated in float64,
so no precision is lost to cancellation), which is also the fallback.
"""
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .autocast import autocast_inputs
from .common import (OP_DEVICES, check_bias, check_input, check_weight, empty_in_layout_of,
                     in_layout_of)
from .dispatch import run_op

__all__ = ['peripheral_depthwise_conv2d', 'expand_peripheral_kernel']


def _check_grid(grid: Sequence[int], cells: int) -> Tuple[int, ...]:
    """Return ``grid`` as a tuple of ints after checking it describes an odd kernel of ``cells`` cells."""
    try:
        widths = tuple(int(w) for w in grid)
    except (TypeError, ValueError):
        raise ValueError(f'grid must be a sequence of positive integer cell widths, got {grid!r}') from None
    if any(w != g for w, g in zip(widths, grid)):
        raise ValueError(f'grid widths must be integers, got {list(grid)}')
    if not widths:
        raise ValueError('grid must have at least one cell')
    if any(w <= 0 for w in widths):
        raise ValueError(f'grid cell widths must be positive, got {list(widths)}')
    if sum(widths) % 2 == 0:
        raise ValueError(f'grid cell widths must sum to an odd kernel size K, got sum {sum(widths)} for '
                         f'{list(widths)}')
    if len(widths) != cells:
        raise ValueError(f'grid must have one width per row of the weight: the weight has {cells} rows '
                         f'and columns (k\'), the grid has {len(widths)} cells ({list(widths)})')
    return widths


def _check_weight_shape(weight: Tensor) -> int:
    if weight.dim() != 4 or weight.shape[1] != 1 or weight.shape[2] != weight.shape[3]:
        raise ValueError(f"weight must have shape (C, 1, k', k'), got {tuple(weight.shape)}")
    return weight.shape[2]


def expand_peripheral_kernel(weight: Tensor, grid: Sequence[int]) -> Tensor:
    """Expand a (C, 1, k', k') peripheral weight into its dense (C, 1, K, K) kernel (differentiable).

    Every position of cell (a, b) of the K×K kernel takes ``weight[:, :, a, b]``.

    Args:
        weight (Tensor): parameter kernel (C, 1, k', k').
        grid (Sequence[int]): k' positive cell widths summing to an odd K, for both axes.

    Returns:
        Tensor: the dense kernel (C, 1, K, K).
    """
    cells = _check_weight_shape(weight)
    # The cell of every kernel position, built on the host: the result's size is known without reading
    # a tensor back (the meta device of a shape-only forward, no CUDA sync), and exports as one Gather.
    cell_of = torch.tensor([cell for cell, width in enumerate(_check_grid(grid, cells)) for _ in range(width)],
                           device=weight.device)
    return weight.index_select(2, cell_of).index_select(3, cell_of)


def _check_inputs(x: Tensor, weight: Tensor, grid: Sequence[int], bias: Optional[Tensor]) -> List[int]:
    check_input(x)
    cells = _check_weight_shape(weight)
    check_weight(x, weight, 'weight', "(C, 1, k', k')")
    check_bias(x, bias)
    return list(_check_grid(grid, cells))


def peripheral_depthwise_conv2d(x: Tensor,
                                weight: Tensor,
                                grid: Sequence[int],
                                bias: Optional[Tensor] = None) -> Tensor:
    """Depthwise 'same' convolution with a peripheral (piecewise-constant) kernel, never built densely.

    Equal to ``F.conv2d(x, expand_peripheral_kernel(weight, grid), bias, padding=K // 2, groups=C)``
    to floating-point precision, borders included, at about k'² instead of K² multiply-adds per pixel.
    Differentiable in ``x``, ``weight`` and ``bias``. Under ``torch.autocast`` the inputs are first cast
    to one dtype (float32 on the CPU; see :mod:`mmslak.ops.autocast`).

    Args:
        x (Tensor): input (N, C, H, W), contiguous or channels_last; the output has the same layout.
        weight (Tensor): parameter kernel (C, 1, k', k'), same dtype as ``x``.
        grid (Sequence[int]): k' positive cell widths summing to an odd K, for both axes.
        bias (Tensor, optional): (C,).

    Returns:
        Tensor: (N, C, H, W).
    """
    x, weight, bias = autocast_inputs(x, weight, bias)
    grid = _check_inputs(x, weight, grid, bias)
    return _peripheral_forward(x, weight, grid, bias)


# ----------------------------------------------------------------------------------------------------
# PyTorch implementation of the separable box-filter algorithm (fallback and CUDA-without-Triton path)
# ----------------------------------------------------------------------------------------------------


def _prefix_sums(t: Tensor, dim: int, half: int) -> Tensor:
    """Float64 cumulative sums of ``t`` zero padded by ``half`` on both sides of ``dim``, led by a 0."""
    after = [0, 0] * (t.dim() - dim % t.dim() - 1)
    padded = F.pad(t.to(torch.float64), after + [half, half])
    return F.pad(padded.cumsum(dim), after + [1, 0])


def _cell_box_sums(t: Tensor, grid: Sequence[int], dim: int) -> Tensor:
    """Box sums of ``t`` along ``dim`` for every cell, zero padding K // 2, accumulated in float64.

    ``out[a][..., p, ...] = Σ_{d in cell a} t[..., p + d - K // 2, ...]``: shape (k', *t.shape).
    """
    prefix = _prefix_sums(t, dim, sum(grid) // 2)
    length = t.shape[dim]
    boxes, start = [], 0
    for width in grid:
        boxes.append(prefix.narrow(dim, start + width, length) - prefix.narrow(dim, start, length))
        start += width
    return torch.stack(boxes)


def torch_peripheral_forward(x: Tensor, weight: Tensor, grid: Sequence[int],
                             bias: Optional[Tensor] = None) -> Tensor:
    """Peripheral convolution by cumulative sums in PyTorch (float64 accumulation); any device."""
    row_boxes = _cell_box_sums(x, grid, dim=2)  # R_a: (k', N, C, H, W)
    mixed = torch.einsum('cab,ancij->bncij', weight[:, 0].to(torch.float64), row_boxes)  # T_b
    prefix = _prefix_sums(mixed, -1, sum(grid) // 2)
    width = x.shape[3]
    out, start = 0, 0
    for b, cell in enumerate(grid):  # y = Σ_b box of cell b (along W) of T_b
        out = out + prefix[b, ..., start + cell:start + cell + width] - prefix[b, ..., start:start + width]
        start += cell
    if bias is not None:
        out = out + bias.to(torch.float64).view(1, -1, 1, 1)
    return in_layout_of(x, out.to(x.dtype))


def torch_peripheral_grad_weight(grad_out: Tensor, x: Tensor, grid: Sequence[int]) -> Tensor:
    """Gradient of the peripheral convolution with respect to the (C, 1, k', k') weight, in PyTorch."""
    row_boxes = _cell_box_sums(x, grid, dim=2)  # R_a: (k', N, C, H, W)
    # G_b[q] = Σ_{e in cell b} g[q - e]: the box of the reversed grid's cell k'-1-b.
    col_boxes = _cell_box_sums(grad_out, list(reversed(grid)), dim=3).flip(0)
    grad_w = torch.einsum('ancij,bncij->cab', row_boxes, col_boxes)
    return grad_w.unsqueeze(1).to(x.dtype)


# ----------------------------------------------------------------------------------------------------
# Backends and the custom ops
# ----------------------------------------------------------------------------------------------------


class PeripheralBackend(NamedTuple):
    """What a backend of the peripheral family provides (see :mod:`mmslak.ops.dispatch`).

    ``forward(x, weight, grid, bias) -> y`` and ``grad_weight(grad_out, x, grid) -> (C, 1, k', k')``;
    the input gradient is the forward with the reversed grid and the flipped weight.
    """
    supports: Callable
    forward: Callable
    grad_weight: Callable


def _torch_supports(x: Tensor, *tensors: Tensor) -> Tuple[bool, str]:
    """The PyTorch implementation takes every input the public API accepts."""
    return True, ''


def _load_cpp() -> PeripheralBackend:
    from . import cpu
    cpu.load_extension()
    if not hasattr(torch.ops.mmslak_ext, 'peripheral_forward'):
        raise ImportError('mmslak._ext was built without the peripheral kernels (csrc/peripheral.cpp); '
                          'rebuild it with `python setup.py build_ext --inplace`')
    return PeripheralBackend(cpu.supports, torch.ops.mmslak_ext.peripheral_forward,
                             torch.ops.mmslak_ext.peripheral_grad_weight)


def _load_triton() -> PeripheralBackend:
    try:
        from .triton import peripheral
    except ImportError as error:
        raise ImportError(f'mmslak.ops.triton.peripheral cannot be imported ({error})') from error
    return PeripheralBackend(peripheral.triton_peripheral_supports, peripheral.triton_peripheral_forward,
                             peripheral.triton_peripheral_grad_weight)


def _load_torch() -> PeripheralBackend:
    return PeripheralBackend(_torch_supports, torch_peripheral_forward, torch_peripheral_grad_weight)


# Backend name to loader, for :mod:`mmslak.ops.dispatch`.
PERIPHERAL_BACKENDS = {'cpp': _load_cpp, 'triton': _load_triton, 'torch': _load_torch}


def _run(call_name: str, call: Callable[[PeripheralBackend], object], x: Tensor, *tensors: Tensor):
    return run_op('peripheral_depthwise_conv2d', PERIPHERAL_BACKENDS, call_name, call, x, *tensors)


@torch.library.custom_op('mmslak::peripheral_dwconv2d', mutates_args=(), device_types=OP_DEVICES)
def _peripheral_forward(x: Tensor, weight: Tensor, grid: List[int], bias: Optional[Tensor]) -> Tensor:
    # The grid is part of the call name, so measured choices are kept per grid.
    return in_layout_of(x, _run(f'forward{tuple(grid)}',
                                lambda backend: backend.forward(x, weight, grid, bias), x, weight))


@_peripheral_forward.register_fake
def _(x, weight, grid, bias):
    return empty_in_layout_of(x)


@torch.library.custom_op('mmslak::peripheral_dwconv2d_grad_weight', mutates_args=(), device_types=OP_DEVICES)
def _peripheral_grad_weight(grad_out: Tensor, x: Tensor, grid: List[int]) -> Tensor:
    return _run(f'grad_weight{tuple(grid)}', lambda backend: backend.grad_weight(grad_out, x, grid), x, grad_out)


@_peripheral_grad_weight.register_fake
def _(grad_out, x, grid):
    return x.new_empty(x.shape[1], 1, len(grid), len(grid))


def _setup_context(ctx, inputs, output):
    x, weight, grid, _ = inputs
    ctx.grid = grid
    ctx.save_for_backward(x, weight)


def _autograd(ctx, grad_out):
    x, weight = ctx.saved_tensors
    need_input, need_weight, _, need_bias = ctx.needs_input_grad
    grad_x = grad_w = grad_b = None
    if need_input:  # the adjoint: the reversed grid with the flipped weight
        grad_x = _peripheral_forward(grad_out, weight.flip(2, 3), ctx.grid[::-1], None)
    if need_weight:
        grad_w = _peripheral_grad_weight(grad_out, x, ctx.grid)
    if need_bias:
        grad_b = grad_out.sum((0, 2, 3))
    return grad_x, grad_w, None, grad_b


_peripheral_forward.register_autograd(_autograd, setup_context=_setup_context)

"""Depthwise large-kernel 'same' convolutions: the only large-kernel convolution entry points of the models.

SLaK (`More ConvNets in the 2020s: Scaling up Kernels Beyond 51x51 using Sparsity
<https://arxiv.org/abs/2207.03620>`_) spends its time in depthwise convolutions with kernels (51, 5),
(5, 51) and (5, 5); PeLK (`Parameter-efficient Large Kernel ConvNets with Peripheral Convolution
<https://arxiv.org/abs/2403.07589>`_) in dense 51x51 and 101x101 ones. PyTorch's depthwise backward is
an order of magnitude slower than its forward for such kernels, so the ops here are declared once as
``torch.library`` custom ops (``mmslak::dwconv2d_forward``/``_backward`` and
``mmslak::decomposed_dwconv2d_forward``/``_backward``, with fake kernels for ``torch.compile`` and
registered autograd), and their CPU and CUDA kernels run the backend picked by
:mod:`mmslak.ops.dispatch` from :data:`DWCONV_BACKENDS`: the C++ CPU kernels, the Triton kernels, or
PyTorch.
"""
import math
from typing import Callable, NamedTuple, Optional, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from .autocast import autocast_inputs
from .common import (OP_DEVICES, check_bias, check_input, check_kernel_sides, check_weight,
                     empty_in_layout_of, in_layout_of)
from .dispatch import run_op

# ----------------------------------------------------------------------------- backends


class DwconvBackend(NamedTuple):
    """The functions a backend of the depthwise family provides.

    * ``supports(x, *weights) -> (bool, reason)``;
    * ``forward(x, weight, bias) -> y``, equal to
      ``F.conv2d(x, weight, bias, padding=(kh // 2, kw // 2), groups=C)`` for x (N, C, H, W) contiguous
      or channels_last, weight (C, 1, kh, kw) with kh, kw odd in 1..151, bias (C,) or None;
    * ``backward(grad_out, x, weight, need_input, need_weight) -> (grad_x or None, grad_w or None)``;
    * ``decomposed_forward(x, w_long, w_wide, w_small, bias) -> y``, the sum of the 'same' depthwise
      convolutions with kernels (K, n), (n, K) and optionally (n, n) (``w_small`` may be None);
    * ``decomposed_backward(grad_out, x, w_long, w_wide, w_small, need_input, need_weight) ->
      (grad_x, g_long, g_wide, g_small)`` (``g_small`` None when ``w_small`` is None).

    The gradient of the bias is ``grad_out.sum((0, 2, 3))``, computed here for every backend. The C++
    (:mod:`mmslak.ops.cpu`), Triton (:mod:`mmslak.ops.triton.dwconv`, names prefixed ``triton_``) and
    PyTorch (:mod:`mmslak.ops.reference`) modules provide these functions.
    """
    supports: Callable
    forward: Callable
    backward: Callable
    decomposed_forward: Callable
    decomposed_backward: Callable


def _from_module(module, prefix=''):
    return DwconvBackend(*(getattr(module, prefix + name) for name in (
        'supports', 'dwconv2d_forward', 'dwconv2d_backward', 'decomposed_forward',
        'decomposed_backward')))


def _load_cpp() -> DwconvBackend:
    from . import cpu
    cpu.load_extension()
    return _from_module(cpu)


def _load_triton() -> DwconvBackend:
    try:
        from .triton import dwconv
    except ImportError as error:
        raise ImportError(f'mmslak.ops.triton.dwconv cannot be imported ({error})') from error
    return _from_module(dwconv, 'triton_')


def _load_torch() -> DwconvBackend:
    from . import reference
    return _from_module(reference)


# Backend name to loader, for :mod:`mmslak.ops.dispatch`.
DWCONV_BACKENDS = {'cpp': _load_cpp, 'triton': _load_triton, 'torch': _load_torch}


def _run(call_name: str, call: Callable[[DwconvBackend], object], x: Tensor, *weights: Optional[Tensor]):
    return run_op('depthwise_conv2d', DWCONV_BACKENDS, call_name, call, x,
                  *(w for w in weights if w is not None))


def _check(x: Tensor, weight: Tensor, name: str = 'weight'):
    check_input(x)
    check_weight(x, weight, name, '(C, 1, kh, kw)')
    check_kernel_sides(weight.shape[2:], f'{name} kernel')


def _grad_or_empty(needed: bool, grad: Optional[Tensor], like: Tensor) -> Tensor:
    """Custom ops return tensors, so a gradient that was not asked for is an empty tensor."""
    return in_layout_of(like, grad) if needed else like.new_empty(0)


# ----------------------------------------------------------------------------- single kernel


@torch.library.custom_op('mmslak::dwconv2d_forward', mutates_args=(), device_types=OP_DEVICES)
def _dwconv2d_forward(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    return in_layout_of(x, _run('forward', lambda backend: backend.forward(x, weight, bias), x, weight))


@_dwconv2d_forward.register_fake
def _(x, weight, bias):
    return empty_in_layout_of(x)


@torch.library.custom_op('mmslak::dwconv2d_backward', mutates_args=(), device_types=OP_DEVICES)
def _dwconv2d_backward(grad_out: Tensor, x: Tensor, weight: Tensor, need_input: bool,
                       need_weight: bool) -> Tuple[Tensor, Tensor]:
    grad_x, grad_w = _run(f'backward{(need_input, need_weight)}',
                          lambda backend: backend.backward(grad_out, x, weight, need_input, need_weight),
                          x, weight)
    return _grad_or_empty(need_input, grad_x, x), _grad_or_empty(need_weight, grad_w, weight)


@_dwconv2d_backward.register_fake
def _(grad_out, x, weight, need_input, need_weight):
    return (empty_in_layout_of(x) if need_input else x.new_empty(0),
            torch.empty_like(weight) if need_weight else weight.new_empty(0))


def _bias_grad(grad_out: Tensor, needed: bool) -> Optional[Tensor]:
    return grad_out.sum((0, 2, 3)) if needed else None


def _dwconv2d_setup_context(ctx, inputs, output):
    x, weight, _ = inputs
    ctx.save_for_backward(x, weight)


def _dwconv2d_autograd(ctx, grad_out):
    x, weight = ctx.saved_tensors
    need_input, need_weight, need_bias = ctx.needs_input_grad
    grad_x, grad_w = _dwconv2d_backward(grad_out, x, weight, need_input, need_weight)
    return (grad_x if need_input else None, grad_w if need_weight else None,
            _bias_grad(grad_out, need_bias))


_dwconv2d_forward.register_autograd(_dwconv2d_autograd, setup_context=_dwconv2d_setup_context)

# ----------------------------------------------------------------------------- decomposed (SLaK)


@torch.library.custom_op('mmslak::decomposed_dwconv2d_forward', mutates_args=(),
                         device_types=OP_DEVICES)
def _decomposed_forward(x: Tensor, w_long: Tensor, w_wide: Tensor, w_small: Optional[Tensor],
                        bias: Optional[Tensor]) -> Tensor:
    return in_layout_of(x, _run(
        'decomposed_forward',
        lambda backend: backend.decomposed_forward(x, w_long, w_wide, w_small, bias),
        x, w_long, w_wide, w_small))


@_decomposed_forward.register_fake
def _(x, w_long, w_wide, w_small, bias):
    return empty_in_layout_of(x)


@torch.library.custom_op('mmslak::decomposed_dwconv2d_backward', mutates_args=(),
                         device_types=OP_DEVICES)
def _decomposed_backward(grad_out: Tensor, x: Tensor, w_long: Tensor, w_wide: Tensor,
                         w_small: Optional[Tensor], need_input: bool,
                         need_weight: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    grad_x, g_long, g_wide, g_small = _run(
        f'decomposed_backward{(need_input, need_weight)}',
        lambda backend: backend.decomposed_backward(grad_out, x, w_long, w_wide, w_small, need_input,
                                                    need_weight),
        x, w_long, w_wide, w_small)
    need_small = need_weight and w_small is not None
    return (_grad_or_empty(need_input, grad_x, x), _grad_or_empty(need_weight, g_long, w_long),
            _grad_or_empty(need_weight, g_wide, w_wide),
            _grad_or_empty(need_small, g_small, w_long if w_small is None else w_small))


@_decomposed_backward.register_fake
def _(grad_out, x, w_long, w_wide, w_small, need_input, need_weight):
    need_small = need_weight and w_small is not None
    return (empty_in_layout_of(x) if need_input else x.new_empty(0),
            torch.empty_like(w_long) if need_weight else w_long.new_empty(0),
            torch.empty_like(w_wide) if need_weight else w_wide.new_empty(0),
            torch.empty_like(w_small) if need_small else w_long.new_empty(0))


def _decomposed_setup_context(ctx, inputs, output):
    x, w_long, w_wide, w_small, _ = inputs
    ctx.has_small = w_small is not None
    ctx.save_for_backward(x, w_long, w_wide, w_small)


def _decomposed_autograd(ctx, grad_out):
    x, w_long, w_wide, w_small = ctx.saved_tensors
    need_input, need_long, need_wide, need_small, need_bias = ctx.needs_input_grad
    need_weight = need_long or need_wide or need_small
    grad_x, g_long, g_wide, g_small = _decomposed_backward(grad_out, x, w_long, w_wide, w_small,
                                                           need_input, need_weight)
    return (grad_x if need_input else None, g_long if need_long else None,
            g_wide if need_wide else None, g_small if need_small else None,
            _bias_grad(grad_out, need_bias))


_decomposed_forward.register_autograd(_decomposed_autograd, setup_context=_decomposed_setup_context)

# ----------------------------------------------------------------------------- public API


def depthwise_conv2d(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """Depthwise 'same' convolution, equal to ``F.conv2d(x, weight, bias, padding=(kh//2, kw//2), groups=C)``.

    Stride 1, dilation 1, zero padding. Differentiable in ``x``, ``weight`` and ``bias``; the result
    has the memory format of ``x``. Under ``torch.autocast`` the inputs are first cast to one dtype
    (float32 on the CPU; see :mod:`mmslak.ops.autocast`).

    Args:
        x (Tensor): input (N, C, H, W), contiguous or channels_last, floating point.
        weight (Tensor): kernels (C, 1, kh, kw), kh and kw odd in 1..151 (rectangular allowed).
        bias (Tensor, optional): (C,).

    Returns:
        Tensor: (N, C, H, W).

    Raises:
        ValueError: for a 3-D input, an integer dtype, a weight not (C, 1, kh, kw), a channel
            mismatch, an even or out-of-range kernel side, or a bias not (C,).
    """
    x, weight, bias = autocast_inputs(x, weight, bias)
    _check(x, weight)
    check_bias(x, bias)
    return _dwconv2d_forward(x, weight, bias)


def decomposed_depthwise_conv2d(x: Tensor, w_long: Tensor, w_wide: Tensor,
                                w_small: Optional[Tensor] = None,
                                bias: Optional[Tensor] = None) -> Tensor:
    """Sum of the 'same' depthwise convolutions with kernels (K, n), (n, K) and (n, n), in one pass.

    This is SLaK's decomposed large-kernel block with its BatchNorms folded into the kernels and
    ``bias``; it is also its training path. Forward reads x once and backward reads (grad_out, x) once
    for all branches, instead of once per branch.

    Args:
        x (Tensor): input (N, C, H, W), contiguous or channels_last, floating point.
        w_long (Tensor): (C, 1, K, n) kernels, K and n odd in 1..151.
        w_wide (Tensor): (C, 1, n, K) kernels.
        w_small (Tensor, optional): (C, 1, n, n) kernels.
        bias (Tensor, optional): (C,).

    Returns:
        Tensor: (N, C, H, W), the sum of the branch outputs plus ``bias``.

    Raises:
        ValueError: for any of the problems :func:`depthwise_conv2d` reports, or kernels whose shapes
            are not (K, n), (n, K) and (n, n).
    """
    x, w_long, w_wide, w_small, bias = autocast_inputs(x, w_long, w_wide, w_small, bias)
    _check(x, w_long, 'w_long')
    _check(x, w_wide, 'w_wide')
    long_side, short_side = w_long.shape[2:]
    if tuple(w_wide.shape[2:]) != (short_side, long_side):
        raise ValueError(f'w_wide must be the transpose shape of w_long: w_long is (K, n) = '
                         f'{(long_side, short_side)}, so w_wide must be {(short_side, long_side)}, '
                         f'got {tuple(w_wide.shape[2:])}')
    if w_small is not None:
        _check(x, w_small, 'w_small')
        if tuple(w_small.shape[2:]) != (short_side, short_side):
            raise ValueError(f'w_small must be (n, n) = {(short_side, short_side)} with n the short '
                             f'side of w_long, got {tuple(w_small.shape[2:])}')
    check_bias(x, bias)
    return _decomposed_forward(x, w_long, w_wide, w_small, bias)


class LargeKernelDepthwiseConv2d(nn.Module):
    """Depthwise 'same' convolution module running :func:`depthwise_conv2d`.

    ``weight`` (and ``bias``) have the shapes of ``nn.Conv2d(C, C, k, padding=k // 2, groups=C)``'s,
    and the same default initialisation, so state dicts move between the two.

    Args:
        channels (int): number of input and output channels C.
        kernel_size (int | tuple[int, int]): odd kernel side(s) in 1..151.
        bias (bool): whether to add a learnable bias. Defaults to False.
    """

    def __init__(self, channels: int, kernel_size, bias: bool = False):
        super().__init__()
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        check_kernel_sides((kh, kw), 'kernel_size')
        if channels < 1:
            raise ValueError(f'channels must be positive, got {channels}')
        self.channels = channels
        self.kernel_size = (kh, kw)
        self.weight = nn.Parameter(torch.empty(channels, 1, kh, kw))
        self.bias = nn.Parameter(torch.empty(channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        # nn.Conv2d's initialisation, so both modules start from the same distribution.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.kernel_size[0] * self.kernel_size[1])
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return depthwise_conv2d(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f'{self.channels}, kernel_size={self.kernel_size}, bias={self.bias is not None}'

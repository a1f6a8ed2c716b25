"""C++ CPU backend of the depthwise 'same' convolutions (``mmslak._ext``, sources in ``csrc/``).

The kernels take float32, float64 and bfloat16 tensors in any layout (contiguous and channels_last are the
fast ones). bfloat16 is computed in float32 and rounded once on output; weight gradients are accumulated
in float32 and returned in the weights' dtype. They run on every CPU: the build the CPU supports is
picked at run time (``cpu_isa()``: ``'avx512bf16'`` computes bfloat16 with VDPBF16PS dot products,
``'avx512'`` and ``'avx2'`` widen it to float32, ``'generic'`` is the compiler's vector extensions: NEON
on aarch64); ``MMSLAK_CPU_ISA=generic|avx2|avx512|avx512bf16`` forces a narrower one, for tests. They run
on torch's intra-op threads (``torch.set_num_threads``) over (image, block of 16 channels) tasks on a
channel-blocked copy of the block (one vector = the 16 channels of one pixel), so every map size uses
full vectors and every load is aligned; see ``csrc/dwconv/kernels.h`` for the tiling. One call handles
one to three kernels and sums their outputs: the decomposed SLaK conv is one pass over x in forward and
one pass over (grad_out, x) in backward.
"""
from typing import List, Optional, Tuple

import torch
from torch import Tensor

# What the C++ kernels (depthwise and peripheral) take.
DTYPES = (torch.float32, torch.float64, torch.bfloat16)

_extension_error = None


def load_extension():
    """Import ``mmslak._ext`` (which registers ``torch.ops.mmslak_ext``); ImportError says why not."""
    global _extension_error
    if _extension_error is None:
        try:
            from mmslak import _ext  # noqa: F401
        except ImportError as error:
            _extension_error = (f'the C++ extension mmslak._ext is not built or cannot be loaded '
                                f'({error}); build it with `python setup.py build_ext --inplace` or '
                                f'`pip install --no-build-isolation -e .` without MMSLAK_NO_EXT=1')
        else:
            _extension_error = ''
    if _extension_error:
        raise ImportError(_extension_error)


def cpu_isa() -> str:
    """Kernel build used on this CPU: ``'avx512bf16'``, ``'avx512'``, ``'avx2'`` or ``'generic'``."""
    load_extension()
    return torch.ops.mmslak_ext.dwconv2d_cpu_isa()


def runnable_isas() -> List[str]:
    """The kernel builds this CPU (and this build of the extension) runs, narrowest first: the values
    ``MMSLAK_CPU_ISA`` accepts here."""
    load_extension()
    return list(torch.ops.mmslak_ext.cpu_isas())


def supports(x: Tensor, *weights: Tensor) -> Tuple[bool, str]:
    if x.device.type != 'cpu':
        return False, f'the C++ kernels take CPU tensors, got a {x.device.type} tensor'
    if x.dtype not in DTYPES:
        return False, f'the C++ kernels take float32, float64 and bfloat16, got {x.dtype}'
    return True, ''


def _weights(*weights: Optional[Tensor]):
    return [w for w in weights if w is not None]


def _grads(grad_out, x, weights, need_input, need_weight):
    grad_x, grad_ws = torch.ops.mmslak_ext.dwconv2d_backward(grad_out, x, weights, need_input,
                                                             need_weight)
    return (grad_x if need_input else None), (list(grad_ws) if need_weight else [None] * len(weights))


def dwconv2d_forward(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    return torch.ops.mmslak_ext.dwconv2d_forward(x, [weight], bias)


def dwconv2d_backward(grad_out: Tensor, x: Tensor, weight: Tensor, need_input: bool,
                      need_weight: bool):
    grad_x, (grad_w, ) = _grads(grad_out, x, [weight], need_input, need_weight)
    return grad_x, grad_w


def decomposed_forward(x: Tensor, w_long: Tensor, w_wide: Tensor, w_small: Optional[Tensor],
                       bias: Optional[Tensor]) -> Tensor:
    return torch.ops.mmslak_ext.dwconv2d_forward(x, _weights(w_long, w_wide, w_small), bias)


def decomposed_backward(grad_out: Tensor, x: Tensor, w_long: Tensor, w_wide: Tensor,
                        w_small: Optional[Tensor], need_input: bool, need_weight: bool):
    grad_x, grad_ws = _grads(grad_out, x, _weights(w_long, w_wide, w_small), need_input, need_weight)
    if w_small is None:
        grad_ws.append(None)
    return (grad_x, *grad_ws)

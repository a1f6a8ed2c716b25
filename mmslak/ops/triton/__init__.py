"""Triton kernels of the depthwise large-kernel convolutions (GPU, or CPU under ``TRITON_INTERPRET=1``).

Importing this package never needs triton; :func:`is_available` and :func:`triton_supports` tell the
dispatcher whether the kernels can run, and the kernels import triton only when first used.
"""
from .dwconv import (is_available, triton_decomposed_backward, triton_decomposed_forward,
                     triton_dwconv2d_backward, triton_dwconv2d_forward, triton_supports)
from .peripheral import triton_peripheral_forward, triton_peripheral_grad_weight, triton_peripheral_supports  # noqa: F401,E501

__all__ = [
    'is_available', 'triton_supports', 'triton_dwconv2d_forward', 'triton_dwconv2d_backward',
    'triton_decomposed_forward', 'triton_decomposed_backward'
]

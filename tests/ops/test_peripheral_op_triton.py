"""Triton kernels of the peripheral convolution under the Triton interpreter, against the dense conv.

The interpreter runs every program in numpy, so the shapes are tiny. triton fixes its interpreter mode
when it is first imported, hence the variable is set before importing it.
"""
import os

os.environ['TRITON_INTERPRET'] = '1'

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

pytest.importorskip('triton', reason='triton is not installed (it ships with the CUDA builds of torch)')

from mmslak.ops import expand_peripheral_kernel, peripheral_depthwise_conv2d  # noqa: E402
from mmslak.ops.dispatch import BACKEND_ENV_VAR  # noqa: E402
from mmslak.ops.triton import (triton_peripheral_forward, triton_peripheral_grad_weight,  # noqa: E402
                               triton_peripheral_supports)

_supported, _reason = triton_peripheral_supports(torch.zeros(1, 1, 1, 1))
if not _supported:
    pytest.skip(f'Triton interpreter unavailable: {_reason}', allow_module_level=True)

# (input shape, grid): an image smaller than the kernel, H = 1, W = 1, a one-cell grid.
CASES = [
    ((1, 2, 5, 4), [3, 1, 1, 4]),
    ((2, 1, 1, 6), [2, 1, 1, 1, 2]),
    ((1, 2, 4, 1), [2, 1, 2]),
    ((1, 1, 3, 3), [1]),
]


def dense_reference(x, weight, grid, bias=None):
    return F.conv2d(x, expand_peripheral_kernel(weight, grid), bias, padding=sum(grid) // 2,
                    groups=x.shape[1])


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('shape, grid', CASES)
def test_kernels_match_dense(shape, grid, dtype):
    torch.manual_seed(0)
    cells = len(grid)
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    weight = torch.randn(shape[1], 1, cells, cells, dtype=dtype, requires_grad=True)
    bias = torch.randn(shape[1], dtype=dtype)
    expected = dense_reference(x, weight, grid, bias)
    grad_out = torch.randn_like(expected)
    (expected_grad_w, ) = torch.autograd.grad(expected, weight, grad_out)
    tolerance = {} if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(triton_peripheral_forward(x.detach(), weight.detach(), grid, bias), expected,
                               **tolerance)
    torch.testing.assert_close(triton_peripheral_grad_weight(grad_out, x.detach(), grid), expected_grad_w,
                               **tolerance)


def test_half_precision_forward():
    torch.manual_seed(0)
    x, weight = torch.randn(1, 2, 5, 4), torch.randn(2, 1, 3, 3)
    out = triton_peripheral_forward(x.half(), weight.half(), [2, 1, 2])
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), dense_reference(x, weight, [2, 1, 2]), rtol=1e-2, atol=1e-2)


def test_public_op_forced_to_triton(monkeypatch):
    """Autograd of the public op through the Triton kernels, channels_last kept, gradcheck in float64."""
    monkeypatch.setenv(BACKEND_ENV_VAR, 'triton')
    torch.manual_seed(0)
    grid = [2, 1, 2]
    x = torch.randn(1, 2, 4, 3, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    weight = torch.randn(2, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, dtype=torch.float64, requires_grad=True)
    out = peripheral_depthwise_conv2d(x, weight, grid, bias)
    assert out.is_contiguous(memory_format=torch.channels_last)
    grad_out = torch.randn_like(out)
    ours = torch.autograd.grad(out, (x, weight, bias), grad_out)
    dense = torch.autograd.grad(dense_reference(x, weight, grid, bias), (x, weight, bias), grad_out)
    for actual, expected in zip(ours, dense):
        torch.testing.assert_close(actual, expected)
    small = (x[:, :1, :3, :2], weight[:1], bias[:1])
    assert torch.autograd.gradcheck(lambda *t: peripheral_depthwise_conv2d(t[0], t[1], grid, t[2]),
                                    tuple(t.detach().requires_grad_() for t in small))

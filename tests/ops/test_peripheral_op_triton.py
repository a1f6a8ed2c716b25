"""Triton kernels of the peripheral convolution against the dense conv, on every device (``triton_device``).

On the CPU they run under the Triton interpreter (tests/conftest.py sets TRITON_INTERPRET=1 before
triton is imported), which runs every program in numpy, so the shapes are tiny; with a GPU (and
TRITON_INTERPRET=0) they run compiled on CUDA too.
"""
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip('triton', reason='triton is not installed (it ships with the CUDA builds of torch)')

from mmslak.ops import expand_peripheral_kernel, peripheral_depthwise_conv2d  # noqa: E402
from mmslak.ops.triton import triton_peripheral_forward, triton_peripheral_grad_weight  # noqa: E402

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
def test_kernels_match_dense(triton_device, shape, grid, dtype):
    torch.manual_seed(0)
    cells = len(grid)
    x = torch.randn(shape, dtype=dtype).to(triton_device).requires_grad_()
    weight = torch.randn(shape[1], 1, cells, cells, dtype=dtype).to(triton_device).requires_grad_()
    bias = torch.randn(shape[1], dtype=dtype).to(triton_device)
    expected = dense_reference(x, weight, grid, bias)
    grad_out = torch.randn_like(expected)
    (expected_grad_w, ) = torch.autograd.grad(expected, weight, grad_out)
    tolerance = {} if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(triton_peripheral_forward(x.detach(), weight.detach(), grid, bias), expected,
                               **tolerance)
    torch.testing.assert_close(triton_peripheral_grad_weight(grad_out, x.detach(), grid), expected_grad_w,
                               **tolerance)


def test_half_precision_forward(triton_device):
    torch.manual_seed(0)
    x, weight = torch.randn(1, 2, 5, 4).to(triton_device), torch.randn(2, 1, 3, 3).to(triton_device)
    out = triton_peripheral_forward(x.half(), weight.half(), [2, 1, 2])
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), dense_reference(x, weight, [2, 1, 2]), rtol=1e-2, atol=1e-2)


def test_public_op_forced_to_triton(triton_device, triton_backend, ran_backends):
    """Autograd of the public op through the Triton kernels, channels_last kept, gradcheck in float64."""
    torch.manual_seed(0)
    grid = [2, 1, 2]
    x = torch.randn(1, 2, 4, 3, dtype=torch.float64).to(triton_device, memory_format=torch.channels_last)
    x.requires_grad_()
    weight = torch.randn(2, 1, 3, 3, dtype=torch.float64).to(triton_device).requires_grad_()
    bias = torch.randn(2, dtype=torch.float64).to(triton_device).requires_grad_()
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
    assert {choice.backend for choice in ran_backends} == {'triton'}

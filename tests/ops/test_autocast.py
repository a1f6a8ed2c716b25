"""Under torch.autocast the ops take a low-precision activation next to float32 weights, as models give them."""
import warnings

import pytest
import torch
import torch.nn.functional as F

from mmslak.ops import decomposed_depthwise_conv2d, depthwise_conv2d


def test_cpu_autocast_computes_in_float32_with_the_cpp_kernels(monkeypatch):
    monkeypatch.setenv('MMSLAK_DWCONV_BACKEND', 'cpp')  # a forced backend raises instead of falling back
    x = torch.randn(2, 4, 9, 11).to(torch.bfloat16).requires_grad_()
    weight = torch.randn(4, 1, 7, 3, requires_grad=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = depthwise_conv2d(x, weight)
    assert out.dtype == torch.float32
    expected = F.conv2d(x.detach().float(), weight.detach(), padding=(3, 1), groups=4)
    torch.testing.assert_close(out.detach(), expected)
    out.sum().backward()
    assert x.grad.dtype == torch.bfloat16 and weight.grad.dtype == torch.float32
    expected_grad = F.conv_transpose2d(torch.ones_like(expected), weight.detach(), padding=(3, 1), groups=4)
    torch.testing.assert_close(x.grad.float(), expected_grad, rtol=1e-2, atol=1e-2)


def test_cpu_autocast_fused_op():
    x = torch.randn(1, 3, 13, 13).to(torch.bfloat16)
    w_long, w_wide, w_small = torch.randn(3, 1, 9, 3), torch.randn(3, 1, 3, 9), torch.randn(3, 1, 3, 3)
    bias = torch.randn(3)
    with torch.autocast('cpu', dtype=torch.bfloat16), warnings.catch_warnings():
        warnings.simplefilter('error')  # no fallback warning: the C++ kernels ran
        out = decomposed_depthwise_conv2d(x, w_long, w_wide, w_small, bias)
    xf = x.float()
    expected = (F.conv2d(xf, w_long, bias, padding=(4, 1), groups=3) + F.conv2d(xf, w_wide, padding=(1, 4), groups=3)
                + F.conv2d(xf, w_small, padding=1, groups=3))
    torch.testing.assert_close(out, expected)


def test_float64_is_left_alone_under_autocast():
    x, weight = torch.randn(1, 2, 5, 5, dtype=torch.float64), torch.randn(2, 1, 3, 3, dtype=torch.float64)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert depthwise_conv2d(x, weight).dtype == torch.float64


def test_mixed_dtypes_outside_autocast_are_still_refused():
    with pytest.raises(ValueError, match='dtype and device of x'):
        depthwise_conv2d(torch.randn(1, 2, 5, 5).bfloat16(), torch.randn(2, 1, 3, 3))


def test_cpu_autocast_peripheral_op():
    from mmslak.ops import expand_peripheral_kernel, peripheral_depthwise_conv2d
    grid = [3, 1, 1, 1, 3]
    x, weight = torch.randn(1, 2, 12, 12).to(torch.bfloat16), torch.randn(2, 1, 5, 5)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = peripheral_depthwise_conv2d(x, weight, grid)
    expected = F.conv2d(x.float(), expand_peripheral_kernel(weight, grid), padding=4, groups=2)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)

"""Under torch.autocast the ops take activations next to float32 weights, as models give them.

On the CPU under ``autocast(dtype=torch.bfloat16)`` the C++ kernels run in bfloat16: the activation is not
cast to float32 and back around the op, and the dispatcher spy (``ran_backends``) shows which backend ran.
"""
import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from mmslak.ops import (decomposed_depthwise_conv2d, depthwise_conv2d, expand_peripheral_kernel,
                        peripheral_depthwise_conv2d)
from mmslak.ops.depthwise import DWCONV_BACKENDS

BF16_ROUNDOFF = 2.0**-8


def _casts_of(prof, shape):
    """The dtype conversions (aten::_to_copy) the profiled code ran on tensors of ``shape``."""
    return [event for event in prof.events()
            if event.name == 'aten::_to_copy' and event.input_shapes and list(event.input_shapes[0]) == list(shape)]


def _conv_float64(x, weights, bias=None):
    x = x.double()
    out = sum(F.conv2d(x, w.double(), padding=(w.shape[2] // 2, w.shape[3] // 2), groups=x.shape[1])
              for w in weights)
    return out if bias is None else out + bias.double().view(1, -1, 1, 1)


def test_cpu_bf16_autocast_runs_the_cpp_kernels_in_bf16_without_casting_the_activation(require_backend,
                                                                                        ran_backends):
    require_backend(DWCONV_BACKENDS, 'cpp')
    x = torch.randn(2, 4, 9, 11).to(torch.bfloat16).requires_grad_()
    weight = torch.randn(4, 1, 7, 3, requires_grad=True)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = depthwise_conv2d(x, weight)
        out.backward(torch.ones_like(out))
    assert out.dtype == torch.bfloat16
    assert _casts_of(prof, x.shape) == []
    assert [(choice.call, choice.backend) for choice in ran_backends] == [
        ('forward', 'cpp'), ('backward(True, True)', 'cpp')]
    # The weight is used rounded to bfloat16, as autocast's own convolutions use it.
    expected = _conv_float64(x.detach(), [weight.detach().bfloat16()])
    torch.testing.assert_close(out.double(), expected, rtol=2 * BF16_ROUNDOFF, atol=1e-5)
    assert x.grad.dtype == torch.bfloat16 and weight.grad.dtype == torch.float32
    exact_weight = weight.detach().bfloat16().double().requires_grad_()
    _conv_float64(x.detach(), [exact_weight]).sum().backward()
    torch.testing.assert_close(weight.grad.double(), exact_weight.grad, rtol=2 * BF16_ROUNDOFF, atol=1e-4)


def test_cpu_bf16_autocast_fused_op_takes_a_float32_residual_stream(require_backend, ran_backends):
    """A float32 input (SLaK's residual stream) is cast to bfloat16 once, as autocast casts conv inputs."""
    require_backend(DWCONV_BACKENDS, 'cpp')
    x = torch.randn(1, 3, 13, 13)
    w_long, w_wide, w_small = torch.randn(3, 1, 9, 3), torch.randn(3, 1, 3, 9), torch.randn(3, 1, 3, 3)
    bias = torch.randn(3)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = decomposed_depthwise_conv2d(x, w_long, w_wide, w_small, bias)
    assert out.dtype == torch.bfloat16
    assert [choice.backend for choice in ran_backends] == ['cpp']
    rounded = [t.bfloat16() for t in (x, w_long, w_wide, w_small, bias)]
    expected = _conv_float64(rounded[0], rounded[1:4], rounded[4])
    torch.testing.assert_close(out.double(), expected, rtol=2 * BF16_ROUNDOFF, atol=1e-4)


def test_cpu_bf16_autocast_peripheral_op(require_backend, ran_backends):
    require_backend(DWCONV_BACKENDS, 'cpp')
    grid = [3, 1, 1, 1, 3]
    x, weight = torch.randn(1, 2, 12, 12).to(torch.bfloat16), torch.randn(2, 1, 5, 5)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = peripheral_depthwise_conv2d(x, weight, grid)
    assert out.dtype == torch.bfloat16
    assert [choice.backend for choice in ran_backends] == ['cpp']
    expected = F.conv2d(x.double(), expand_peripheral_kernel(weight.bfloat16().double(), grid), padding=4, groups=2)
    torch.testing.assert_close(out.double(), expected, rtol=2 * BF16_ROUNDOFF, atol=1e-4)


def test_cpu_float16_autocast_computes_in_float32(require_backend, ran_backends):
    require_backend(DWCONV_BACKENDS, 'cpp')
    x, weight = torch.randn(1, 2, 6, 6).half(), torch.randn(2, 1, 3, 3)
    with torch.autocast('cpu', dtype=torch.float16):
        out = depthwise_conv2d(x, weight)
    assert out.dtype == torch.float32
    assert [choice.backend for choice in ran_backends] == ['cpp']
    torch.testing.assert_close(out, F.conv2d(x.float(), weight, padding=1, groups=2))


def test_float64_is_left_alone_under_autocast():
    x, weight = torch.randn(1, 2, 5, 5, dtype=torch.float64), torch.randn(2, 1, 3, 3, dtype=torch.float64)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert depthwise_conv2d(x, weight).dtype == torch.float64


def test_mixed_dtypes_outside_autocast_are_still_refused():
    with pytest.raises(ValueError, match='dtype and device of x'):
        depthwise_conv2d(torch.randn(1, 2, 5, 5).bfloat16(), torch.randn(2, 1, 3, 3))

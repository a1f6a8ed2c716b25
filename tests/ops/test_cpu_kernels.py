"""The C++ CPU kernels in every dtype x layout x kernel shape x kernel build, against float64.

Layouts: contiguous, channels_last, and two that are neither (a channel slice, H and W swapped in memory),
which the depthwise kernels read with their own strides. Each case runs a public op with the C++ backend
forced (``MMSLAK_DWCONV_BACKEND=cpp``: no silent
fallback) and one kernel build forced (``MMSLAK_CPU_ISA``; every build this CPU runs, from the portable
vector-extension one to AVX512-BF16), and compares the forward, the input gradient and every weight and
bias gradient with ``F.conv2d`` evaluated in float64 on the same (already rounded) inputs.

The tolerance is the error bound of the arithmetic the kernels do, element by element:
``|out - ref| <= u_out |ref| + 2 n u_acc (|w| * |x|)``, where ``(|w| * |x|)`` is the same reduction
over absolute values, n its length (the taps of all kernels plus the bias for the forward and the input
gradient, N * H * W for a weight or bias gradient), ``u_acc`` the unit roundoff of the accumulation
(float32 for float32 and bfloat16: products of bfloat16 values are exact in float32; float64 for
float64), and ``u_out`` that of the one final rounding to the output dtype (2^-8 for bfloat16).
"""
import pytest
import torch
import torch.nn.functional as F

from mmslak.ops import (decomposed_depthwise_conv2d, depthwise_conv2d, expand_peripheral_kernel,
                        peripheral_depthwise_conv2d)
from mmslak.ops.depthwise import DWCONV_BACKENDS
from mmslak.ops.dispatch import BACKEND_ENV_VAR

ISAS = ('generic', 'avx2', 'avx512', 'avx512bf16')
DTYPES = (torch.float32, torch.float64, torch.bfloat16)
LAYOUTS = ('nchw', 'channels_last', 'channel_slice', 'transposed_hw')
# Unit roundoff of the final rounding to the output dtype, and of the accumulation.
OUTPUT_ROUNDOFF = {torch.float64: 2.0**-53, torch.float32: 2.0**-24, torch.bfloat16: 2.0**-8}
ACCUMULATION_ROUNDOFF = {torch.float64: 2.0**-53, torch.float32: 2.0**-24, torch.bfloat16: 2.0**-24}

# (id, (N, C, H, W), kernels): C = 19 covers a full channel block and a partial one for every build.
DEPTHWISE_CASES = [
    ('1x1', (2, 19, 6, 7), [(1, 1)]),
    ('3x3', (2, 19, 9, 11), [(3, 3)]),
    ('7x3', (1, 19, 12, 10), [(7, 3)]),
    ('kernel-larger-than-map', (2, 19, 5, 4), [(13, 11)]),
    ('decomposed-13x5', (2, 19, 9, 11), [(13, 5), (5, 13), (5, 5)]),
    ('decomposed-51x5-on-14x14', (1, 19, 14, 14), [(51, 5), (5, 51), (5, 5)]),
    ('decomposed-no-small-on-1-column', (2, 19, 8, 1), [(7, 3), (3, 7)]),
]
PERIPHERAL_CASES = [
    ('1-cell', (2, 19, 6, 7), [1]),
    ('5-cells', (2, 19, 12, 9), [3, 1, 1, 1, 3]),
    ('kernel-larger-than-map', (1, 19, 7, 6), [4, 2, 1, 2, 4]),
]


@pytest.fixture(params=ISAS)
def cpu_build(request, monkeypatch, require_backend):
    """One kernel build of the C++ backend, forced; skipped when this CPU (or this build) lacks it."""
    require_backend(DWCONV_BACKENDS, 'cpp')
    from mmslak.ops import cpu
    if request.param not in cpu.runnable_isas():
        pytest.skip(f'this CPU runs {cpu.runnable_isas()}, not {request.param}')
    monkeypatch.setenv(BACKEND_ENV_VAR, 'cpp')
    monkeypatch.setenv('MMSLAK_CPU_ISA', request.param)
    return request.param


def _leaves(tensors, dtype):
    return [t.to(dtype).detach().requires_grad_() for t in tensors]


def _in_layout(x, layout):
    """``x`` (same values) laid out in memory as ``layout`` says."""
    if layout == 'channels_last':
        return x.contiguous(memory_format=torch.channels_last)
    if layout == 'channel_slice':  # every other channel of a tensor with each channel twice
        return torch.stack([x, x], 2).flatten(1, 2)[:, ::2]
    if layout == 'transposed_hw':  # H is the fastest-moving dimension
        return x.transpose(2, 3).contiguous().transpose(2, 3)
    return x


def _assert_within_bound(name, out, ref, abs_ref, dtype, n):
    assert out.dtype == dtype, f'{name}: dtype {out.dtype}, expected {dtype}'
    error = (out.double() - ref).abs()
    bound = OUTPUT_ROUNDOFF[dtype] * ref.abs() + 2 * n * ACCUMULATION_ROUNDOFF[dtype] * abs_ref
    excess = (error - bound).max().item()
    assert excess <= 0, (f'{name}: error exceeds the {dtype} bound (n = {n}) by {excess:.3g}; '
                         f'max error {error.max().item():.3g}')


def _check_op(op, reference, inputs, dtype, layout, forward_terms, seed=0):
    """Forward and every gradient of ``op(*inputs)`` in ``dtype`` against ``reference`` in float64.

    Args:
        op, reference: callables ``(x, *params) -> y``; ``reference`` is evaluated in float64.
        inputs (list[Tensor]): float64 ``x`` then the parameters (kernels, bias).
        forward_terms (int): reduction length of the forward and the input gradient.
    """
    generator = torch.Generator().manual_seed(seed)
    x = _in_layout(inputs[0].to(dtype), layout).detach().requires_grad_()
    leaves = [x] + _leaves(inputs[1:], dtype)
    out = op(*leaves)
    grad_out = torch.randn(out.shape, generator=generator, dtype=torch.float64).to(dtype)
    out.backward(grad_out)
    # The reference sees the rounded values; a second pass over absolute values gives the bounds.
    exact = [t.detach().double().requires_grad_() for t in leaves]
    ref = reference(*exact)
    ref.backward(grad_out.double())
    absolute = [t.detach().double().abs().requires_grad_() for t in leaves]
    abs_ref = reference(*absolute)
    abs_ref.backward(grad_out.double().abs())
    assert out.is_contiguous(memory_format=torch.channels_last) == (layout == 'channels_last')
    _assert_within_bound('forward', out, ref.detach(), abs_ref.detach(), dtype, forward_terms)
    _assert_within_bound('grad x', leaves[0].grad, exact[0].grad, absolute[0].grad, dtype, forward_terms)
    pixels = x.shape[0] * x.shape[2] * x.shape[3]
    for index, (leaf, exact_leaf, abs_leaf) in enumerate(zip(leaves[1:], exact[1:], absolute[1:]), 1):
        _assert_within_bound(f'grad of parameter {index}', leaf.grad, exact_leaf.grad, abs_leaf.grad, dtype,
                             pixels)


def _depthwise_reference(x, *params):
    *weights, bias = params
    out = sum(F.conv2d(x, w, padding=(w.shape[2] // 2, w.shape[3] // 2), groups=x.shape[1]) for w in weights)
    return out + bias.view(1, -1, 1, 1)


def _depthwise_op(x, *params):
    *weights, bias = params
    if len(weights) == 1:
        return depthwise_conv2d(x, weights[0], bias)
    return decomposed_depthwise_conv2d(x, *weights, bias=bias)


@pytest.mark.parametrize('layout', LAYOUTS)
@pytest.mark.parametrize('dtype', DTYPES, ids=lambda dtype: str(dtype).split('.')[-1])
@pytest.mark.parametrize('shape,kernels', [case[1:] for case in DEPTHWISE_CASES],
                         ids=[case[0] for case in DEPTHWISE_CASES])
def test_depthwise_kernels_within_the_error_bound(cpu_build, shape, kernels, dtype, layout):
    generator = torch.Generator().manual_seed(1)
    channels = shape[1]
    inputs = [torch.randn(shape, generator=generator, dtype=torch.float64)]
    inputs += [torch.randn(channels, 1, *k, generator=generator, dtype=torch.float64) for k in kernels]
    inputs.append(torch.randn(channels, generator=generator, dtype=torch.float64))
    taps = sum(kh * kw for kh, kw in kernels) + 1
    _check_op(_depthwise_op, _depthwise_reference, inputs, dtype, layout, taps)


@pytest.mark.parametrize('layout', LAYOUTS)
@pytest.mark.parametrize('dtype', DTYPES, ids=lambda dtype: str(dtype).split('.')[-1])
@pytest.mark.parametrize('shape,grid', [case[1:] for case in PERIPHERAL_CASES],
                         ids=[case[0] for case in PERIPHERAL_CASES])
def test_peripheral_kernels_within_the_error_bound(cpu_build, shape, grid, dtype, layout):
    generator = torch.Generator().manual_seed(2)
    channels, cells, size = shape[1], len(grid), sum(grid)
    inputs = [torch.randn(shape, generator=generator, dtype=torch.float64),
              torch.randn(channels, 1, cells, cells, generator=generator, dtype=torch.float64),
              torch.randn(channels, generator=generator, dtype=torch.float64)]

    def reference(x, weight, bias):
        return F.conv2d(x, expand_peripheral_kernel(weight, grid), bias, padding=size // 2, groups=channels)

    # The box filters reach every tap of the dense K x K kernel through nested sums.
    _check_op(lambda x, weight, bias: peripheral_depthwise_conv2d(x, weight, grid, bias), reference, inputs,
              dtype, layout, size * size + 1)


def test_results_do_not_depend_on_the_thread_count(require_backend, monkeypatch):
    """Tasks are independent and the weight gradient is summed in a fixed order, so 1 and 2 threads of
    torch's pool (torch.set_num_threads) give bit-identical results."""
    require_backend(DWCONV_BACKENDS, 'cpp')
    monkeypatch.setenv(BACKEND_ENV_VAR, 'cpp')
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(3, 40, 15, 13, generator=generator)
    weights = [torch.randn(40, 1, *k, generator=generator) for k in ((11, 3), (3, 11), (3, 3))]
    previous = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            leaves = _leaves([x, *weights], torch.bfloat16)
            out = decomposed_depthwise_conv2d(*leaves)
            out.backward(torch.ones_like(out))
            results.append([out.detach()] + [leaf.grad for leaf in leaves])
    finally:
        torch.set_num_threads(previous)
    for single, double in zip(*results):
        assert torch.equal(single, double)

"""mmslak.ops depthwise convolutions against F.conv2d, for the C++ and PyTorch backends.

Every backend is forced through ``MMSLAK_DWCONV_BACKEND`` so that a test of ``cpp`` cannot silently
run PyTorch. The Triton backend is tested in ``test_triton_dwconv.py`` under the interpreter; every
build, dtype and layout of the C++ kernels in ``test_cpu_kernels.py``.
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mmslak.ops import (LargeKernelDepthwiseConv2d, decomposed_depthwise_conv2d,
                        depthwise_conv2d)
from mmslak.ops.depthwise import DWCONV_BACKENDS
from mmslak.ops.dispatch import BACKEND_ENV_VAR


def _backend_params():
    params = []
    for name in ('cpp', 'torch'):
        try:
            DWCONV_BACKENDS[name]()
            marks = ()
        except ImportError as error:
            marks = pytest.mark.skip(reason=f'{name} backend unavailable: {error}')
        params.append(pytest.param(name, marks=marks))
    return params


BACKENDS = _backend_params()
@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    monkeypatch.setenv(BACKEND_ENV_VAR, request.param)
    return request.param


def _reference(x, weights, bias=None):
    """Sum of F.conv2d 'same' depthwise convolutions: the definition the ops must meet."""
    out = sum(F.conv2d(x, w, padding=(w.shape[2] // 2, w.shape[3] // 2), groups=x.shape[1])
              for w in weights)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def _inputs(shape, kernels, dtype=torch.float64, channels_last=False, seed=0):
    generator = torch.Generator().manual_seed(seed)
    n, c, h, w = shape
    x = torch.randn(shape, dtype=dtype, generator=generator)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weights = [torch.randn(c, 1, *k, dtype=dtype, generator=generator) for k in kernels]
    bias = torch.randn(c, dtype=dtype, generator=generator)
    return x, weights, bias


def _check_forward_backward(x, weights, bias, op, atol=1e-10, rtol=1e-10):
    """Forward, grad_x, grad of every weight and grad_bias of ``op`` against autograd of F.conv2d."""
    leaves = [t.detach().clone().requires_grad_() for t in (x, *weights, bias)]
    ref_leaves = [t.detach().clone().requires_grad_() for t in (x, *weights, bias)]
    out = op(leaves[0], leaves[1:-1], leaves[-1])
    ref = _reference(ref_leaves[0], ref_leaves[1:-1], ref_leaves[-1])
    torch.testing.assert_close(out, ref, atol=atol, rtol=rtol)
    assert out.is_contiguous(memory_format=torch.channels_last) == ref.is_contiguous(
        memory_format=torch.channels_last)
    grad_out = torch.randn_like(ref)
    out.backward(grad_out)
    ref.backward(grad_out)
    for leaf, ref_leaf in zip(leaves, ref_leaves):
        torch.testing.assert_close(leaf.grad, ref_leaf.grad, atol=atol, rtol=rtol)


def _single(x, weights, bias):
    (weight, ) = weights
    return depthwise_conv2d(x, weight, bias)


def _decomposed(x, weights, bias):
    return decomposed_depthwise_conv2d(x, *weights, bias=bias)


SINGLE_CASES = [
    ((2, 3, 12, 11), (51, 5)),
    ((2, 3, 11, 12), (5, 51)),
    ((1, 4, 15, 17), (13, 13)),
    ((2, 5, 7, 6), (1, 1)),
    ((1, 2, 5, 4), (9, 11)),     # kernel larger than the image on both sides
    ((2, 3, 1, 9), (5, 5)),      # H = 1
    ((1, 3, 9, 1), (3, 7)),      # W = 1
    ((1, 2, 40, 70), (7, 3)),    # W spans more than one column block
    ((1, 20, 6, 6), (3, 3)),     # more channels than one channel block
    ((1, 2, 9, 8), (151, 3)),    # the largest kernel side
]


@pytest.mark.parametrize('channels_last', [False, True], ids=['nchw', 'channels_last'])
@pytest.mark.parametrize('shape,kernel', SINGLE_CASES)
def test_depthwise_matches_conv2d_float64(backend, shape, kernel, channels_last):
    x, weights, bias = _inputs(shape, [kernel], channels_last=channels_last)
    _check_forward_backward(x, weights, bias, _single)


DECOMPOSED_CASES = [
    ((2, 3, 12, 12), 11, 5),
    ((1, 2, 6, 5), 13, 3),       # long side larger than the image
    ((2, 17, 9, 14), 7, 1),
    ((1, 2, 1, 7), 5, 3),
]


@pytest.mark.parametrize('channels_last', [False, True], ids=['nchw', 'channels_last'])
@pytest.mark.parametrize('with_small', [True, False], ids=['small', 'no_small'])
@pytest.mark.parametrize('shape,long_side,short_side', DECOMPOSED_CASES)
def test_decomposed_matches_sum_of_conv2d(backend, shape, long_side, short_side, with_small,
                                          channels_last):
    kernels = [(long_side, short_side), (short_side, long_side)]
    if with_small:
        kernels.append((short_side, short_side))
    x, weights, bias = _inputs(shape, kernels, channels_last=channels_last)
    _check_forward_backward(x, weights, bias, _decomposed)


def test_gradcheck_single(backend):
    x, (weight, ), bias = _inputs((1, 2, 6, 5), [(5, 3)])
    inputs = tuple(t.requires_grad_() for t in (x, weight, bias))
    assert torch.autograd.gradcheck(depthwise_conv2d, inputs)


def test_gradcheck_decomposed(backend):
    x, weights, bias = _inputs((1, 2, 5, 4), [(5, 3), (3, 5), (3, 3)])
    inputs = tuple(t.requires_grad_() for t in (x, *weights, bias))
    assert torch.autograd.gradcheck(decomposed_depthwise_conv2d, inputs)


def test_gradients_only_for_what_requires_grad(backend):
    x, (weight, ), bias = _inputs((1, 3, 8, 8), [(5, 5)])
    weight.requires_grad_()
    depthwise_conv2d(x, weight, bias).sum().backward()
    ref_weight = weight.detach().clone().requires_grad_()
    _reference(x, [ref_weight], bias).sum().backward()
    torch.testing.assert_close(weight.grad, ref_weight.grad)
    assert x.grad is None and bias.grad is None


def test_non_contiguous_grad_out(backend):
    # sum() hands backward an expanded (stride 0) gradient.
    x, weights, bias = _inputs((2, 3, 7, 9), [(9, 3), (3, 9), (3, 3)], dtype=torch.float32)
    x.requires_grad_()
    decomposed_depthwise_conv2d(x, *weights, bias=bias).sum().backward()
    ref_x = x.detach().clone().requires_grad_()
    _reference(ref_x, weights, bias).sum().backward()
    torch.testing.assert_close(x.grad, ref_x.grad, atol=1e-4, rtol=1e-4)


def _check_with_cpp(x, weights, bias, op):
    """:func:`_check_forward_backward` with the C++ backend forced (hypothesis tests take no fixtures)."""
    try:
        DWCONV_BACKENDS['cpp']()
    except ImportError as error:
        pytest.skip(f'cpp backend unavailable: {error}')
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(BACKEND_ENV_VAR, 'cpp')
        _check_forward_backward(x, weights, bias, op)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 2), c=st.integers(1, 20), h=st.integers(1, 23), w=st.integers(1, 40),
       kh=st.integers(0, 12), kw=st.integers(0, 12), channels_last=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_cpp_random_shapes(n, c, h, w, kh, kw, channels_last, seed):
    kernel = (2 * kh + 1, 2 * kw + 1)
    x, weights, bias = _inputs((n, c, h, w), [kernel], channels_last=channels_last, seed=seed)
    _check_with_cpp(x, weights, bias, _single)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 2), c=st.integers(1, 20), h=st.integers(1, 20), w=st.integers(1, 36),
       long_half=st.integers(0, 15), short_half=st.integers(0, 3), channels_last=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_cpp_random_decomposed(n, c, h, w, long_half, short_half, channels_last, seed):
    big, small = 2 * long_half + 1, 2 * short_half + 1
    x, weights, bias = _inputs((n, c, h, w), [(big, small), (small, big), (small, small)],
                               channels_last=channels_last, seed=seed)
    _check_with_cpp(x, weights, bias, _decomposed)


def test_opcheck_custom_ops(backend):
    # Fake kernels, autograd registration and schema agree with the real kernels.
    x, weights, bias = _inputs((1, 2, 6, 7), [(5, 3), (3, 5), (3, 3)], dtype=torch.float32)
    x.requires_grad_()
    torch.library.opcheck(torch.ops.mmslak.dwconv2d_forward.default, (x, weights[0], bias))
    torch.library.opcheck(torch.ops.mmslak.decomposed_dwconv2d_forward.default,
                          (x, *weights, bias))
    torch.library.opcheck(torch.ops.mmslak.decomposed_dwconv2d_forward.default,
                          (x, weights[0], weights[1], None, None))


def test_module_state_dict_moves_to_and_from_nn_conv2d(backend):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 6, (7, 3), padding=(3, 1), groups=6, bias=True)
    module = LargeKernelDepthwiseConv2d(6, (7, 3), bias=True)
    assert module.weight.shape == conv.weight.shape
    module.load_state_dict(conv.state_dict())
    x = torch.randn(2, 6, 9, 8)
    torch.testing.assert_close(module(x), conv(x), atol=1e-5, rtol=1e-5)
    conv.load_state_dict(LargeKernelDepthwiseConv2d(6, (7, 3), bias=True).state_dict())
    assert 'kernel_size=(7, 3)' in repr(module)


@pytest.mark.parametrize('make,message', [
    (lambda: (torch.randn(3, 8, 8), torch.randn(3, 1, 3, 3), None), '4-D'),
    (lambda: (torch.ones(1, 3, 8, 8, dtype=torch.int64), torch.ones(3, 1, 3, 3,
                                                                    dtype=torch.int64), None),
     'floating-point'),
    (lambda: (torch.randn(1, 3, 8, 8), torch.randn(3, 1, 4, 3), None), 'odd'),
    (lambda: (torch.randn(1, 3, 8, 8), torch.randn(3, 1, 153, 3), None), 'odd and in 1..151'),
    (lambda: (torch.randn(1, 3, 8, 8), torch.randn(3, 3, 3), None), r'\(C, 1, kh, kw\)'),
    (lambda: (torch.randn(1, 3, 8, 8), torch.randn(3, 2, 3, 3), None), r'\(C, 1, kh, kw\)'),
    (lambda: (torch.randn(1, 3, 8, 8), torch.randn(4, 1, 3, 3), None), '4 channels but x has 3'),
    (lambda: (torch.randn(1, 3, 8, 8), torch.randn(3, 1, 3, 3, dtype=torch.float64), None),
     'dtype and device'),
    (lambda: (torch.randn(1, 3, 8, 8), torch.randn(3, 1, 3, 3), torch.randn(4)), 'bias'),
])
def test_bad_input_raises_value_error(make, message):
    x, weight, bias = make()
    with pytest.raises(ValueError, match=message):
        depthwise_conv2d(x, weight, bias)


def test_decomposed_bad_shapes_raise_value_error():
    x = torch.randn(1, 3, 8, 8)
    w_long, w_small = torch.randn(3, 1, 7, 3), torch.randn(3, 1, 3, 3)
    with pytest.raises(ValueError, match='w_wide must be the transpose shape'):
        decomposed_depthwise_conv2d(x, w_long, torch.randn(3, 1, 3, 5))
    with pytest.raises(ValueError, match=r'w_small must be \(n, n\)'):
        decomposed_depthwise_conv2d(x, w_long, torch.randn(3, 1, 3, 7), torch.randn(3, 1, 5, 5))
    with pytest.raises(ValueError, match='w_long has 2 channels'):
        decomposed_depthwise_conv2d(x, torch.randn(2, 1, 7, 3), torch.randn(3, 1, 3, 7), w_small)


def test_module_rejects_even_kernel():
    with pytest.raises(ValueError, match='odd'):
        LargeKernelDepthwiseConv2d(4, 4)


def test_cpp_raw_op_checks_shapes(require_backend):
    """The extension's own op refuses a wrong bias or weight instead of reading past it."""
    require_backend(DWCONV_BACKENDS, 'cpp')
    x, weight = torch.randn(1, 40, 8, 8), torch.randn(40, 1, 3, 3)
    with pytest.raises(RuntimeError, match=r'bias must be \(C,\)'):
        torch.ops.mmslak_ext.dwconv2d_forward(x, [weight], torch.randn(1))
    with pytest.raises(RuntimeError, match='weights must be'):
        torch.ops.mmslak_ext.dwconv2d_backward(x, x, [weight[:39]], True, True)

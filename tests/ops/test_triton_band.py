"""The tensor-core band kernels (mmslak/ops/triton/band_kernels.py) against float64 F.conv2d.

On the CPU they run under the Triton interpreter (tests/conftest.py sets TRITON_INTERPRET=1), so the
shapes are tiny; with a GPU the same tests run on CUDA too (the ``device`` fixture). The reference is
F.conv2d in float64 on the inputs rounded to the tested dtype, so the tolerance is the dtype's rounding
of the result: the kernels accumulate in fp32, and fp32 inputs go through tf32x3 dots.
"""
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip('triton', reason='triton is not installed (it ships with the CUDA builds of torch)')

from mmslak.ops.triton import dwconv  # noqa: E402

# (name, input shape, kernels): long along H, long along W, dense, SLaK's three branches (the small
# one folded into the wide one) and two. Odd sizes, batch 2, and maps smaller than the kernel.
CASES = [
    ('long-h', (2, 3, 17, 12), [(11, 3)]),
    ('long-w', (1, 2, 9, 20), [(3, 13)]),
    ('dense-map-smaller', (2, 2, 10, 9), [(15, 15)]),
    ('slak-3-branches', (2, 2, 13, 11), [(11, 3), (3, 11), (3, 3)]),
    ('slak-2-branches-map-smaller', (1, 3, 8, 9), [(21, 5), (5, 21)]),
]
# Relative to the largest reference value: one ulp of the dtype at that value. A GPU rounds results to
# nearest (half an ulp); triton 3.8's interpreter truncates fp32 to bf16 (up to one ulp).
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2 * 2**-8, torch.float16: 2 * 2**-11}
DTYPE_IDS = {torch.float32: 'fp32', torch.bfloat16: 'bf16', torch.float16: 'fp16'}


def _params():
    """fp32 in both layouts; bf16 and fp16 in one layout each, alternating from case to case."""
    params = []
    for index, (name, shape, kernels) in enumerate(CASES):
        layouts = {torch.float32: (False, True), torch.bfloat16: (index % 2 == 1, ),
                   torch.float16: (index % 2 == 0, )}
        for dtype, channels_last_options in layouts.items():
            for channels_last in channels_last_options:
                case_id = f'{name}-{DTYPE_IDS[dtype]}{"-cl" if channels_last else ""}'
                params.append(pytest.param(shape, kernels, dtype, channels_last, id=case_id))
    return params


def _inputs(shape, kernels, dtype, channels_last, device):
    generator = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=generator).to(dtype)
    weights = [(torch.randn(shape[1], 1, *k, generator=generator) / (k[0] * k[1])**0.5).to(dtype)
               for k in kernels]
    grad_out = torch.randn(shape, generator=generator).to(dtype)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return ([t.to(device) for t in (x.to(memory_format=memory_format), grad_out)],
            [w.to(device) for w in weights])


def _reference(x, weights, grad_out):
    """Output and gradients of sum_b conv(x, w_b) in float64 on the same (rounded) values."""
    x = x.detach().double().requires_grad_()
    weights = [w.detach().double().requires_grad_() for w in weights]
    out = sum(F.conv2d(x, w, padding=(w.shape[2] // 2, w.shape[3] // 2), groups=x.shape[1])
              for w in weights)
    out.backward(grad_out.double())
    return out.detach(), x.grad, [w.grad for w in weights]


def _assert_close(actual, expected, dtype, what):
    assert actual.dtype == dtype, what
    scale = expected.abs().max().item()
    error = (actual.double() - expected).abs().max().item()
    assert error <= TOLERANCE[dtype] * scale, f'{what}: max error {error:.3g}, scale {scale:.3g}'


@pytest.mark.parametrize('shape,kernels,dtype,channels_last', _params())
def test_band_kernels_match_float64_conv(triton_device, shape, kernels, dtype, channels_last):
    (x, grad_out), weights = _inputs(shape, kernels, dtype, channels_last, triton_device)
    folded = dwconv.decomposed_launch_weights(x, *weights)[0] if len(weights) == 3 else weights
    assert dwconv.uses_band(x, folded), 'this case must run the band kernels'
    expected_y, expected_x, expected_ws = _reference(x.cpu(), [w.cpu() for w in weights], grad_out.cpu())
    if len(weights) == 1:
        y = dwconv.triton_dwconv2d_forward(x, weights[0])
        grad_x, grad_w = dwconv.triton_dwconv2d_backward(grad_out, x, weights[0])
        grad_ws = [grad_w]
    else:
        small = weights[2] if len(weights) == 3 else None
        y = dwconv.triton_decomposed_forward(x, weights[0], weights[1], small)
        grad_x, *grad_ws = dwconv.triton_decomposed_backward(grad_out, x, weights[0], weights[1], small)
        assert (grad_ws[2] is None) == (small is None)
        grad_ws = grad_ws[:len(weights)]
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    assert y.is_contiguous(memory_format=memory_format)
    _assert_close(y.cpu(), expected_y, dtype, 'forward')
    _assert_close(grad_x.cpu(), expected_x, dtype, 'grad-input')
    for index, (grad_w, expected_w) in enumerate(zip(grad_ws, expected_ws)):
        assert grad_w.shape == weights[index].shape
        _assert_close(grad_w.cpu(), expected_w, dtype, f'grad-weight {index}')


def test_band_forward_adds_bias(triton_device):
    (x, _), (weight, ) = _inputs((1, 2, 9, 9), [(9, 3)], torch.float32, False, triton_device)
    bias = torch.tensor([0.5, -2.0], device=triton_device)
    without = dwconv.triton_dwconv2d_forward(x, weight)
    torch.testing.assert_close(dwconv.triton_dwconv2d_forward(x, weight, bias),
                               without + bias.view(1, -1, 1, 1))


def test_rule_keeps_the_direct_kernels_where_a_band_is_wasteful():
    def uses(shape, kernels, dtype=torch.float32):
        return dwconv.uses_band(torch.empty(shape, dtype=dtype, device='meta'),
                                [torch.empty(shape[1], 1, *k, dtype=dtype, device='meta') for k in kernels])

    assert uses((2, 8, 56, 56), [(51, 5), (5, 51)])
    assert uses((2, 8, 56, 56), [(51, 51)], torch.bfloat16)
    assert not uses((2, 8, 56, 56), [(5, 5)])  # small kernel
    assert not uses((2, 8, 7, 7), [(13, 5), (5, 13)])  # tiny map
    assert not uses((2, 8, 56, 56), [(51, 5), (5, 51)], torch.float64)  # no float64 dots
    assert not uses((2, 8, 56, 56), [(51, 5), (31, 5)])  # two kernels long along H: one slot


def test_public_op_runs_the_band_kernels_when_triton_is_forced(triton_backend, ran_backends, triton_device):
    from mmslak.ops import decomposed_depthwise_conv2d
    (x, grad_out), weights = _inputs((1, 2, 9, 10), [(9, 3), (3, 9), (3, 3)], torch.float32, True,
                                      triton_device)
    x.requires_grad_()
    for weight in weights:
        weight.requires_grad_()
    y = decomposed_depthwise_conv2d(x, *weights)
    y.backward(grad_out)
    expected_y, expected_x, expected_ws = _reference(x.cpu(), [w.cpu() for w in weights], grad_out.cpu())
    assert y.is_contiguous(memory_format=torch.channels_last)
    _assert_close(y.detach().cpu(), expected_y, torch.float32, 'forward')
    _assert_close(x.grad.cpu(), expected_x, torch.float32, 'grad-input')
    for weight, expected in zip(weights, expected_ws):
        _assert_close(weight.grad.cpu(), expected, torch.float32, 'grad-weight')
    assert [(choice.call, choice.backend) for choice in ran_backends] == [
        ('decomposed_forward', 'triton'), ('decomposed_backward(True, True)', 'triton')]

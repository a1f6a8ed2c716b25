"""Triton depthwise kernels checked against F.conv2d, on every device (``triton_device``).

On the CPU they run under the Triton interpreter (tests/conftest.py sets TRITON_INTERPRET=1 before
triton is imported), which runs every program in numpy, so the shapes are tiny; with a GPU (and
TRITON_INTERPRET=0, as tools/analysis/gpu_check.sh runs them) they run compiled on CUDA too.
"""
import os

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip('triton', reason='triton is not installed (it ships with the CUDA builds of torch)')

from mmslak.ops.triton import (triton_decomposed_backward, triton_decomposed_forward,  # noqa: E402
                               triton_dwconv2d_backward, triton_dwconv2d_forward, triton_supports)

# (input shape, kernel (kh, kw), channels_last)
CASES = [
    ((2, 3, 9, 9), (7, 3), False),
    ((2, 3, 9, 9), (3, 7), True),
    ((1, 3, 5, 6), (5, 5), False),
    ((2, 2, 6, 7), (1, 1), True),
    ((1, 2, 4, 3), (9, 11), False),  # kernel larger than the image on both sides
    ((1, 3, 1, 8), (3, 5), False),  # H = 1
    ((2, 2, 7, 1), (5, 3), True),  # W = 1
]
CASE_IDS = [f'{"x".join(map(str, s))}-k{k[0]}x{k[1]}{"-cl" if cl else ""}' for s, k, cl in CASES]


def reference_conv(x, weight, bias=None):
    kh, kw = weight.shape[2:]
    return F.conv2d(x, weight, bias, padding=(kh // 2, kw // 2), groups=x.shape[1])


def make_inputs(shape, kernel, channels_last, dtype, device, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=generator, dtype=dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    weight = torch.randn(shape[1], 1, *kernel, generator=generator, dtype=dtype)
    bias = torch.randn(shape[1], generator=generator, dtype=dtype)
    return x.to(device), weight.to(device), bias.to(device)


def autograd_reference(x, weights, grad_out):
    """Gradients of sum_b conv(x, w_b) for grad_out, by autograd through F.conv2d."""
    x = x.detach().clone().requires_grad_()
    weights = [w.detach().clone().requires_grad_() for w in weights]
    sum(reference_conv(x, w) for w in weights).backward(grad_out)
    return x.grad, [w.grad for w in weights]


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('shape,kernel,channels_last', CASES, ids=CASE_IDS)
def test_forward_matches_conv2d(triton_device, shape, kernel, channels_last, dtype):
    x, weight, bias = make_inputs(shape, kernel, channels_last, dtype, triton_device)
    assert triton_supports(x, weight, bias) == (True, '')
    y = triton_dwconv2d_forward(x, weight, bias)
    assert y.dtype == dtype
    assert y.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(y, reference_conv(x, weight, bias), rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(triton_dwconv2d_forward(x, weight), reference_conv(x, weight), rtol=tolerance,
                               atol=tolerance)


@pytest.mark.parametrize('shape,kernel,channels_last', CASES, ids=CASE_IDS)
def test_backward_matches_autograd(triton_device, shape, kernel, channels_last):
    x, weight, _ = make_inputs(shape, kernel, channels_last, torch.float64, triton_device)
    grad_out = torch.randn(reference_conv(x, weight).shape, dtype=torch.float64, device=triton_device)
    expected_x, (expected_w, ) = autograd_reference(x, [weight], grad_out)
    grad_x, grad_w = triton_dwconv2d_backward(grad_out, x, weight, need_input=True, need_weight=True)
    torch.testing.assert_close(grad_x, expected_x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_w, expected_w, rtol=1e-12, atol=1e-12)


def test_backward_returns_only_what_is_needed(triton_device):
    x, weight, _ = make_inputs((1, 2, 5, 5), (3, 5), False, torch.float64, triton_device)
    grad_out = torch.randn(1, 2, 5, 5, dtype=torch.float64, device=triton_device)
    expected_x, (expected_w, ) = autograd_reference(x, [weight], grad_out)
    grad_x, grad_w = triton_dwconv2d_backward(grad_out, x, weight, need_input=True, need_weight=False)
    assert grad_w is None
    torch.testing.assert_close(grad_x, expected_x)
    grad_x, grad_w = triton_dwconv2d_backward(grad_out, x, weight, need_input=False, need_weight=True)
    assert grad_x is None
    torch.testing.assert_close(grad_w, expected_w)


def test_backward_with_broadcast_grad_out(triton_device):
    # y.sum().backward() hands the backward an expanded tensor whose strides are all 0.
    x, weight, _ = make_inputs((2, 2, 5, 4), (5, 3), False, torch.float64, triton_device)
    grad_out = torch.ones((), dtype=torch.float64, device=triton_device).expand(2, 2, 5, 4)
    expected_x, (expected_w, ) = autograd_reference(x, [weight], grad_out.contiguous())
    grad_x, grad_w = triton_dwconv2d_backward(grad_out, x, weight, need_input=True, need_weight=True)
    torch.testing.assert_close(grad_x, expected_x)
    torch.testing.assert_close(grad_w, expected_w)


def test_strided_view_input(triton_device):
    # Neither contiguous nor channels_last: the kernels take any strides.
    base, weight, bias = make_inputs((2, 3, 9, 12), (5, 3), False, torch.float64, triton_device)
    x = base[:, :, 1:8, ::2]
    grad_out = torch.randn(2, 3, 7, 6, dtype=torch.float64, device=triton_device)
    torch.testing.assert_close(triton_dwconv2d_forward(x, weight, bias), reference_conv(x, weight, bias))
    expected_x, (expected_w, ) = autograd_reference(x, [weight], grad_out)
    grad_x, grad_w = triton_dwconv2d_backward(grad_out, x, weight, need_input=True, need_weight=True)
    torch.testing.assert_close(grad_x, expected_x)
    torch.testing.assert_close(grad_w, expected_w)


def test_empty_batch(triton_device):
    x, weight, bias = make_inputs((0, 3, 5, 5), (3, 3), False, torch.float32, triton_device)
    assert triton_dwconv2d_forward(x, weight, bias).shape == (0, 3, 5, 5)
    grad_x, grad_w = triton_dwconv2d_backward(torch.empty_like(x), x, weight, True, True)
    assert grad_x.shape == x.shape
    assert torch.equal(grad_w, torch.zeros_like(weight))


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('channels_last', [False, True])
def test_half_precision_forward(triton_device, dtype, channels_last):
    x, weight, bias = make_inputs((2, 3, 8, 7), (7, 3), channels_last, dtype, triton_device)
    y = triton_dwconv2d_forward(x, weight, bias)
    assert y.dtype == dtype
    # Accumulation is in fp32, so the only error is rounding the result (and nothing like the error of
    # summing 21 terms in half precision).
    expected = reference_conv(x.float(), weight.float(), bias.float())
    torch.testing.assert_close(y.float(), expected, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(y, expected.to(dtype), rtol=0, atol=expected.abs().max().item() * 2**-7)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision_backward(triton_device, dtype):
    x, weight, _ = make_inputs((2, 2, 6, 7), (5, 3), False, dtype, triton_device)
    grad_out = torch.randn(2, 2, 6, 7).to(triton_device, dtype)
    expected_x, (expected_w, ) = autograd_reference(x.float(), [weight.float()], grad_out.float())
    grad_x, grad_w = triton_dwconv2d_backward(grad_out, x, weight, need_input=True, need_weight=True)
    assert grad_x.dtype == grad_w.dtype == dtype
    # grad_w sums 2 * 6 * 7 products: in fp32 the error stays at the rounding of the result.
    torch.testing.assert_close(grad_x.float(), expected_x, rtol=1e-2, atol=2e-2)
    torch.testing.assert_close(grad_w.float(), expected_w, rtol=1e-2, atol=1e-1)


@pytest.mark.parametrize('with_small', [True, False], ids=['long+wide+small', 'long+wide'])
@pytest.mark.parametrize('channels_last', [False, True])
def test_decomposed_matches_sum_of_convs(triton_device, with_small, channels_last):
    x, w_long, bias = make_inputs((2, 3, 8, 9), (7, 3), channels_last, torch.float64, triton_device, seed=1)
    generator = torch.Generator().manual_seed(2)
    w_wide = torch.randn(3, 1, 3, 7, generator=generator, dtype=torch.float64).to(triton_device)
    w_small = (torch.randn(3, 1, 3, 3, generator=generator, dtype=torch.float64).to(triton_device)
               if with_small else None)
    weights = [w_long, w_wide] + ([w_small] if with_small else [])

    y = triton_decomposed_forward(x, w_long, w_wide, w_small, bias)
    expected = sum(reference_conv(x, w) for w in weights) + bias.view(1, -1, 1, 1)
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)

    grad_out = torch.randn(expected.shape, generator=generator, dtype=torch.float64).to(triton_device)
    expected_x, expected_ws = autograd_reference(x, weights, grad_out)
    grad_x, *grad_ws = triton_decomposed_backward(grad_out, x, w_long, w_wide, w_small, need_input=True,
                                                  need_weight=True)
    torch.testing.assert_close(grad_x, expected_x, rtol=1e-12, atol=1e-12)
    for grad_w, expected_w in zip(grad_ws, expected_ws):
        torch.testing.assert_close(grad_w, expected_w, rtol=1e-12, atol=1e-12)
    assert (grad_ws[2] is None) == (not with_small)


def test_decomposed_half_precision_forward(triton_device):
    x, w_long, bias = make_inputs((1, 2, 6, 6), (5, 3), False, torch.bfloat16, triton_device)
    w_wide = torch.randn(2, 1, 3, 5).to(triton_device, torch.bfloat16)
    y = triton_decomposed_forward(x, w_long, w_wide, None, bias)
    assert y.dtype == torch.bfloat16
    expected = (reference_conv(x.float(), w_long.float(), bias.float()) + reference_conv(x.float(), w_wide.float()))
    torch.testing.assert_close(y.float(), expected, rtol=1e-2, atol=2e-2)


def test_supports_reports_reasons(triton_device, monkeypatch):
    x, weight, bias = make_inputs((1, 2, 5, 5), (3, 3), False, torch.float32, triton_device)
    assert triton_supports(x, weight, None, bias) == (True, '')

    def reason(*tensors):
        supported, why = triton_supports(*tensors)
        assert not supported
        return why

    assert 'dtype' in reason(x.to(torch.int32), weight.to(torch.int32))
    assert 'float64' in reason(x, weight.double())
    assert 'odd' in reason(x, torch.randn(2, 1, 4, 3, device=triton_device))
    assert 'C=2' in reason(x, torch.randn(3, 1, 3, 3, device=triton_device))
    assert 'bias' in reason(x, weight, torch.randn(3, device=triton_device))
    assert '4-D' in reason(x[0], weight)
    if triton_device.type == 'cpu':
        monkeypatch.setenv('TRITON_INTERPRET', '0')
        assert 'TRITON_INTERPRET' in reason(x, weight)


def test_public_ops_run_triton_through_autograd(triton_device, triton_backend, ran_backends):
    from mmslak.ops import decomposed_depthwise_conv2d, depthwise_conv2d
    x, weight, bias = make_inputs((1, 2, 4, 5), (3, 5), False, torch.float64, triton_device)
    x.requires_grad_()
    weight.requires_grad_()
    bias.requires_grad_()
    assert torch.autograd.gradcheck(depthwise_conv2d, (x, weight, bias), fast_mode=True)

    generator = torch.Generator().manual_seed(3)
    w_long, w_wide, w_small = (torch.randn(2, 1, *k, generator=generator, dtype=torch.float64).to(
        triton_device).requires_grad_() for k in [(5, 3), (3, 5), (3, 3)])
    assert torch.autograd.gradcheck(decomposed_depthwise_conv2d, (x, w_long, w_wide, w_small, bias),
                                    fast_mode=True)
    assert {choice.backend for choice in ran_backends} == {'triton'}


def test_public_ops_match_conv2d_with_triton_channels_last(triton_device, triton_backend):
    from mmslak.ops import decomposed_depthwise_conv2d
    x, w_long, bias = make_inputs((2, 3, 6, 5), (5, 3), True, torch.float32, triton_device, seed=4)
    w_wide = torch.randn(3, 1, 3, 5, device=triton_device)
    x.requires_grad_()
    w_long.requires_grad_()
    w_wide.requires_grad_()
    y = decomposed_depthwise_conv2d(x, w_long, w_wide, None, bias)
    assert y.is_contiguous(memory_format=torch.channels_last)
    grad_out = torch.randn(y.shape, device=triton_device)
    y.backward(grad_out)
    expected_x, (expected_long, expected_wide) = autograd_reference(x, [w_long, w_wide], grad_out)
    torch.testing.assert_close(y, reference_conv(x, w_long, bias) + reference_conv(x, w_wide))
    torch.testing.assert_close(x.grad, expected_x)
    torch.testing.assert_close(w_long.grad, expected_long)
    torch.testing.assert_close(w_wide.grad, expected_wide)


def _start_inspect(cache_dir, *arguments):
    """Start tools/analysis/inspect_triton_kernels.py (it compiles for the GPU: no TRITON_INTERPRET), with
    its own triton cache (no race with other processes compiling the same kernels); its output goes to
    files in ``cache_dir`` (no pipe to fill while another run is waited for)."""
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).parents[2]
    env = {key: value for key, value in os.environ.items() if key != 'TRITON_INTERPRET'}
    env['TRITON_CACHE_DIR'] = str(cache_dir)
    cache_dir.mkdir(parents=True)
    with open(cache_dir / 'stdout', 'w') as stdout, open(cache_dir / 'stderr', 'w') as stderr:
        return subprocess.Popen([sys.executable, str(root / 'tools/analysis/inspect_triton_kernels.py'),
                                 *arguments], env=env, cwd=root, stdout=stdout, stderr=stderr)


@pytest.mark.slow
def test_every_kernel_compiles_for_a100_and_h100(tmp_path):
    """What the interpreter cannot check: valid compiled Triton for sm_80 and sm_90, tensor-core instructions
    in every band kernel, no spills (the tool's --check). The two compile at once: a compiler process is
    single-threaded."""
    runs = {arch: _start_inspect(tmp_path / arch, '--arch', arch, '--dtype', 'fp32,bf16,fp16,fp64', '--check')
            for arch in ('80', '90')}
    for arch, process in runs.items():
        process.wait(timeout=1200)
        stdout, stderr = ((tmp_path / arch / name).read_text() for name in ('stdout', 'stderr'))
        assert process.returncode == 0, f'sm_{arch}:\n{stdout[-2000:]}{stderr[-3000:]}'
        band = [line for line in stdout.splitlines() if line.startswith('band_')]
        assert band and all(' spills=0 ' in line and ' mma=0 ' not in line for line in band), band
        if arch == '90':
            # SLaK's stage-1 shape: forward, input and weight gradients of bf16 and fp32 on tensor cores.
            assert sum('[slak-s1-512,' in line for line in band) >= 6, band

"""Benchmark mmslak's depthwise large-kernel ops against F.conv2d on SLaK-T and PeLK layer shapes.

``--device cpu`` (the default): for each shape it prints forward and forward+backward milliseconds of
the mmslak op (NCHW and channels_last input) and of PyTorch (the same convolutions with ``F.conv2d``,
NCHW and channels_last), the speed-up over the better PyTorch layout, and the GFLOP/s and percentage of
this machine's peak of our forward, grad-input and grad-weight. The peak is measured in the same run by
a large ``torch.mm`` in the benchmarked dtype, so the percentages stay meaningful on a busy machine.
Times are medians over repeats. The op runs the backend the dispatcher picks.

``--device cuda``: SLaK-T's stages at 512x512 (ADE20K crops, batch 4) and 224x224 (ImageNet, batch 64)
and PeLK's dense 51x51 and 101x101 kernels. Per shape and dtype it prints the largest error of our
Triton kernels and of PyTorch against ``F.conv2d`` in float64 (relative to the largest reference
value; forward, input and weight gradients), forward and forward+backward ms (CUDA events, medians)
of our Triton kernels (forced with ``MMSLAK_DWCONV_BACKEND=triton``) and of PyTorch in both layouts,
the speed-up of our better layout over PyTorch's better layout, and the backend the measured choice
takes for the forward and the backward (``triton`` or ``torch``, NCHW). It needs only torch and
triton: run it from the repository root with ``PYTHONPATH=.`` where mmslak is not installed.

FLOPs are nominal: 2 * N * C * H * W * (sum of kernel areas) per pass, grad-input and grad-weight one
pass each, forward+backward three; taps that fall in the zero padding count too.

Examples:
    python tools/analysis/benchmark_ops.py --threads 2
    python tools/analysis/benchmark_ops.py --dtype bf16
    PYTHONPATH=. python tools/analysis/benchmark_ops.py --device cuda --dtype fp32,bf16,fp16
"""
import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from mmslak.ops import decomposed_depthwise_conv2d, depthwise_conv2d, dispatch
from mmslak.ops.depthwise import DWCONV_BACKENDS

DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}

# (name, (N, C, H, W), kernels): SLaK-T's four stages at 224x224 (decomposed K x 5, 5 x K, 5 x 5),
# and PeLK's dense kernels on the stage-1 map of its 3/8 partial channels.
SHAPES = [
    ('SLaK-T s1 K=51', (2, 124, 56, 56), [(51, 5), (5, 51), (5, 5)]),
    ('SLaK-T s2 K=49', (2, 249, 28, 28), [(49, 5), (5, 49), (5, 5)]),
    ('SLaK-T s3 K=47', (2, 499, 14, 14), [(47, 5), (5, 47), (5, 5)]),
    ('SLaK-T s4 K=13', (2, 998, 7, 7), [(13, 5), (5, 13), (5, 5)]),
    ('PeLK dense 51x51', (2, 47, 56, 56), [(51, 51)]),
    ('PeLK dense 101x101', (2, 47, 56, 56), [(101, 101)]),
]
SLAK_T_STAGES = [(124, 51), (249, 49), (499, 47), (998, 13)]  # (channels, K), maps at /4 .. /32
CUDA_SHAPES = [
    *[(f'SLaK-T s{i + 1} 512 K={k}', (4, c, 128 >> i, 128 >> i), [(k, 5), (5, k), (5, 5)])
      for i, (c, k) in enumerate(SLAK_T_STAGES)],
    *[(f'SLaK-T s{i + 1} 224 K={k}', (64, c, 56 >> i, 56 >> i), [(k, 5), (5, k), (5, 5)])
      for i, (c, k) in enumerate(SLAK_T_STAGES)],
    ('PeLK dense 51x51', (64, 47, 56, 56), [(51, 51)]),
    ('PeLK dense 101x101', (64, 47, 56, 56), [(101, 101)]),
]


def median_ms(fn, repeats, budget_s):
    """Median wall time of ``fn`` in ms over up to ``repeats`` runs (at least 3) within ``budget_s``."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < repeats and (len(times) < 3 or time.perf_counter() - start < budget_s):
        begin = time.perf_counter()
        fn()
        times.append(time.perf_counter() - begin)
    return statistics.median(times) * 1e3


def measure_peak_gflops(repeats, dtype, size=2048):
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    ms = median_ms(lambda: torch.mm(a, b), repeats, budget_s=5)
    return 2 * size**3 / ms / 1e6


def torch_op(x, weights):
    return sum(F.conv2d(x, w, padding=(w.shape[2] // 2, w.shape[3] // 2), groups=x.shape[1])
               for w in weights)


def mmslak_op(x, weights):
    if len(weights) == 1:
        return depthwise_conv2d(x, weights[0])
    return decomposed_depthwise_conv2d(x, *weights)


def forward_backward(op, x, weights, grad):
    leaves = [x.detach().requires_grad_()] + [w.detach().requires_grad_() for w in weights]
    op(leaves[0], leaves[1:]).backward(grad)


def backward_part(x, weights, grad, need_input, need_weight):
    if len(weights) == 1:
        return torch.ops.mmslak.dwconv2d_backward(grad, x, weights[0], need_input, need_weight)
    return torch.ops.mmslak.decomposed_dwconv2d_backward(grad, x, *weights, need_input, need_weight)


def make_inputs(shape, kernels, dtype, device):
    """x, the kernels (scaled so that outputs are O(1)) and an output gradient, seeded."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=generator).to(device, dtype)
    weights = [(torch.randn(shape[1], 1, *k, generator=generator) / (len(kernels) * k[0] * k[1])**0.5).to(
        device, dtype) for k in kernels]
    return x, weights


def benchmark(name, shape, kernels, dtype, peak, repeats, budget_s):
    x, weights = make_inputs(shape, kernels, dtype, 'cpu')
    flops = 2 * x.numel() * sum(kh * kw for kh, kw in kernels)
    layouts = {'nchw': x, 'cl': x.contiguous(memory_format=torch.channels_last)}
    grads = {key: torch.randn_like(value) for key, value in layouts.items()}
    row = {}
    with torch.no_grad():
        for layout, inp in layouts.items():
            row[f'ours fwd {layout}'] = median_ms(lambda: mmslak_op(inp, weights), repeats, budget_s)
            row[f'torch fwd {layout}'] = median_ms(lambda: torch_op(inp, weights), repeats, budget_s)
        row['ours gx'] = median_ms(lambda: backward_part(x, weights, grads['nchw'], True, False),
                                   repeats, budget_s)
        row['ours gw'] = median_ms(lambda: backward_part(x, weights, grads['nchw'], False, True),
                                   repeats, budget_s)
    for layout, inp in layouts.items():
        row[f'ours f+b {layout}'] = median_ms(
            lambda: forward_backward(mmslak_op, inp, weights, grads[layout]), repeats, budget_s)
        row[f'torch f+b {layout}'] = median_ms(
            lambda: forward_backward(torch_op, inp, weights, grads[layout]), repeats, budget_s)

    def rate(ms):
        gflops = flops / ms / 1e6
        return f'{gflops:6.1f} {100 * gflops / peak:4.0f}%'

    best_torch_fwd = min(row['torch fwd nchw'], row['torch fwd cl'])
    best_torch_fb = min(row['torch f+b nchw'], row['torch f+b cl'])
    best_ours_fb = min(row['ours f+b nchw'], row['ours f+b cl'])
    print(f'{name:<19} {flops / 1e9:6.2f} '
          f'{row["ours fwd nchw"]:8.2f} {row["ours fwd cl"]:8.2f} {row["torch fwd nchw"]:8.2f} '
          f'{row["torch fwd cl"]:8.2f} {best_torch_fwd / max(row["ours fwd nchw"], row["ours fwd cl"]):6.2f}x | '
          f'{row["ours f+b nchw"]:8.2f} {row["ours f+b cl"]:8.2f} {row["torch f+b nchw"]:8.2f} '
          f'{row["torch f+b cl"]:8.2f} {best_torch_fb / best_ours_fb:6.2f}x | '
          f'{rate(min(row["ours fwd nchw"], row["ours fwd cl"]))} {rate(row["ours gx"])} '
          f'{rate(row["ours gw"])}', flush=True)


def run_cpu(args, dtype, dtype_name):
    probe = torch.zeros(1, 1, 1, 1, dtype=dtype)
    backend, _ = dispatch.select_backend('depthwise_conv2d', DWCONV_BACKENDS, probe, probe)
    peak = measure_peak_gflops(args.repeats, dtype)
    print(f'threads: {torch.get_num_threads()}  torch {torch.__version__}  dtype {dtype_name}  mmslak backend '
          f'on CPU: {backend}  {dtype_name} peak (torch.mm 2048^3): {peak:.1f} GFLOP/s')
    print('times in ms (median); "best" = better PyTorch layout / our slower layout (fwd) or our '
          'better layout (f+b); GFLOP/s and % of peak for our forward, grad-input, grad-weight')
    print(f'{"shape":<19} {"GFLOP":>6} {"fwd":>8} {"fwd cl":>8} {"torch":>8} {"torch cl":>8} '
          f'{"vs best":>7} | {"f+b":>8} {"f+b cl":>8} {"torch":>8} {"torch cl":>8} {"vs best":>7} | '
          f'{"fwd GF/s":>11} {"grad-in":>11} {"grad-w":>11}')
    for name, shape, kernels in SHAPES:
        if args.only in name:
            benchmark(name, shape, kernels, dtype, peak, args.repeats, args.budget)
    print(f'{dtype_name} peak re-measured after the run: {measure_peak_gflops(args.repeats, dtype):.1f} '
          f'GFLOP/s')


# ----------------------------------------------------------------------------- CUDA


def relative_errors(op, x, weights, grad, reference):
    """Largest |op - reference| / max |reference| over the output and the input and weight gradients."""
    leaves = [x.detach().requires_grad_()] + [w.detach().requires_grad_() for w in weights]
    out = op(leaves[0], leaves[1:])
    results = [out.detach()] + list(torch.autograd.grad(out, leaves, grad))
    return [((result.double() - expected).abs().max() / expected.abs().max()).item()
            for result, expected in zip(results, reference)]


def float64_reference(x, weights, grad):
    leaves = [x.detach().double().requires_grad_()] + [w.detach().double().requires_grad_() for w in weights]
    out = torch_op(leaves[0], leaves[1:])
    return [out.detach()] + list(torch.autograd.grad(out, leaves, grad.double()))


def benchmark_cuda(name, shape, kernels, dtype, dtype_name, repeats, device=torch.device('cuda')):
    x, weights = make_inputs(shape, kernels, dtype, device)
    layouts = {'nchw': x, 'cl': x.contiguous(memory_format=torch.channels_last)}
    grads = {key: torch.randn_like(value) for key, value in layouts.items()}

    def ms(fn):
        return dispatch.event_timer(fn, device, repeats) * 1e3

    os.environ[dispatch.BACKEND_ENV_VAR] = 'triton'
    try:
        reference = float64_reference(x, weights, grads['nchw'])
        ours_error = max(relative_errors(mmslak_op, x, weights, grads['nchw'], reference))
        torch_error = max(relative_errors(torch_op, x, weights, grads['nchw'], reference))
        del reference
        row = {}
        for layout, inp in layouts.items():
            with torch.no_grad():
                row[f'ours fwd {layout}'] = ms(lambda: mmslak_op(inp, weights))
                row[f'torch fwd {layout}'] = ms(lambda: torch_op(inp, weights))
            row[f'ours f+b {layout}'] = ms(lambda: forward_backward(mmslak_op, inp, weights, grads[layout]))
            row[f'torch f+b {layout}'] = ms(lambda: forward_backward(torch_op, inp, weights, grads[layout]))
    finally:
        del os.environ[dispatch.BACKEND_ENV_VAR]
    with dispatch.recording() as choices:  # the first unforced call of a signature measures
        forward_backward(mmslak_op, x, weights, grads['nchw'])
    chosen = '/'.join(choice.backend for choice in choices)
    best_torch = min(row['torch f+b nchw'], row['torch f+b cl'])
    best_ours = min(row['ours f+b nchw'], row['ours f+b cl'])
    print(f'{name:<22} {dtype_name:>4} {ours_error:9.2e} {torch_error:9.2e} | '
          f'{row["ours fwd nchw"]:8.3f} {row["ours fwd cl"]:8.3f} {row["torch fwd nchw"]:8.3f} '
          f'{row["torch fwd cl"]:8.3f} | {row["ours f+b nchw"]:8.3f} {row["ours f+b cl"]:8.3f} '
          f'{row["torch f+b nchw"]:8.3f} {row["torch f+b cl"]:8.3f} {best_torch / best_ours:7.2f}x | {chosen}',
          flush=True)


def run_cuda(args, dtypes):
    import triton
    properties = torch.cuda.get_device_properties(0)
    print(f'{properties.name} (sm_{properties.major}{properties.minor})  torch {torch.__version__}  '
          f'triton {triton.__version__}  CUDA {torch.version.cuda}  cuDNN {torch.backends.cudnn.version()}')
    print('errors: max |result - F.conv2d float64| / max |reference| over output, grad-input and '
          'grad-weight; times in ms (CUDA events, median); "vs best" = PyTorch\'s better f+b layout / our '
          'better one; choice = backend the measured choice takes (forward/backward, NCHW)')
    print(f'{"shape":<22} {"type":>4} {"err ours":>9} {"err torch":>9} | {"fwd":>8} {"fwd cl":>8} '
          f'{"torch":>8} {"torch cl":>8} | {"f+b":>8} {"f+b cl":>8} {"torch":>8} {"torch cl":>8} '
          f'{"vs best":>8} | choice')
    for dtype_name, dtype in dtypes:
        for name, shape, kernels in CUDA_SHAPES:
            if args.only in name:
                benchmark_cuda(name, shape, kernels, dtype, dtype_name, args.repeats)
                torch.cuda.empty_cache()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'], help='where the ops run')
    parser.add_argument('--dtype', default='fp32', help='comma-separated: fp32, bf16, fp16')
    parser.add_argument('--threads', type=int, default=2, help='torch (and OpenMP) threads (CPU)')
    parser.add_argument('--repeats', type=int, default=15, help='maximum runs per measurement')
    parser.add_argument('--budget', type=float, default=2.0,
                        help='seconds after which a CPU measurement stops repeating (at least 3 runs)')
    parser.add_argument('--only', default='', help='run the shapes whose name contains this text')
    args = parser.parse_args()
    names = [name.strip() for name in args.dtype.split(',') if name.strip()]
    if not names or any(name not in DTYPES for name in names):
        parser.exit(2, f'error: --dtype takes {", ".join(DTYPES)} (comma-separated), got {args.dtype!r}\n')
    dtypes = [(name, DTYPES[name]) for name in names]
    if args.device == 'cuda':
        if not torch.cuda.is_available():
            parser.exit(2, 'error: --device cuda but torch sees no CUDA device\n')
        run_cuda(args, dtypes)
        return
    torch.set_num_threads(args.threads)
    for dtype_name, dtype in dtypes:
        run_cpu(args, dtype, dtype_name)


if __name__ == '__main__':
    main()

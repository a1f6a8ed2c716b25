"""Benchmark mmslak's depthwise large-kernel ops against F.conv2d on SLaK-T and PeLK layer shapes.

For each shape it prints forward and forward+backward milliseconds of the mmslak op (NCHW and
channels_last input) and of PyTorch (the same convolutions with ``F.conv2d``, NCHW and channels_last),
the speed-up over the better PyTorch layout, and the GFLOP/s and percentage of this machine's fp32 peak
of our forward, grad-input and grad-weight. The peak is measured in the same run by a large
``torch.mm``, so the percentages stay meaningful on a busy machine. Times are medians over repeats.

FLOPs are nominal: 2 * N * C * H * W * (sum of kernel areas) per pass, grad-input and grad-weight one
pass each, forward+backward three; taps that fall in the zero padding count too.

Example:
    python tools/analysis/benchmark_ops.py --threads 2
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from mmslak.ops import decomposed_depthwise_conv2d, depthwise_conv2d
from mmslak.ops.depthwise import DWCONV_BACKENDS
from mmslak.ops.dispatch import select_backend

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


def measure_peak_gflops(repeats, size=2048):
    a, b = torch.randn(size, size), torch.randn(size, size)
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


def benchmark(name, shape, kernels, peak, repeats, budget_s):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=generator)
    weights = [torch.randn(shape[1], 1, *k, generator=generator) * 0.01 for k in kernels]
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--threads', type=int, default=2, help='torch (and OpenMP) threads')
    parser.add_argument('--repeats', type=int, default=15, help='maximum runs per measurement')
    parser.add_argument('--budget', type=float, default=2.0,
                        help='seconds after which a measurement stops repeating (at least 3 runs)')
    parser.add_argument('--only', default='', help='run the shapes whose name contains this text')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    probe = torch.zeros(1, 1, 1, 1)
    backend, _ = select_backend('depthwise_conv2d', DWCONV_BACKENDS, probe, torch.zeros(1, 1, 1, 1))
    peak = measure_peak_gflops(args.repeats)
    print(f'threads: {torch.get_num_threads()}  torch {torch.__version__}  mmslak backend on CPU: '
          f'{backend}  fp32 peak (torch.mm 2048^3): {peak:.1f} GFLOP/s')
    print('times in ms (median); "best" = better PyTorch layout / our slower layout (fwd) or our '
          'better layout (f+b); GFLOP/s and % of peak for our forward, grad-input, grad-weight')
    print(f'{"shape":<19} {"GFLOP":>6} {"fwd":>8} {"fwd cl":>8} {"torch":>8} {"torch cl":>8} '
          f'{"vs best":>7} | {"f+b":>8} {"f+b cl":>8} {"torch":>8} {"torch cl":>8} {"vs best":>7} | '
          f'{"fwd GF/s":>11} {"grad-in":>11} {"grad-w":>11}')
    for name, shape, kernels in SHAPES:
        if args.only in name:
            benchmark(name, shape, kernels, peak, args.repeats, args.budget)
    print(f'fp32 peak re-measured after the run: {measure_peak_gflops(args.repeats):.1f} GFLOP/s')


if __name__ == '__main__':
    main()

"""The fast peripheral convolution against the dense convolution with the expanded kernel.

For PeLK's layer shapes (224² input, the 3/8 of the channels that go through the large kernel), prints
the median forward and forward+backward times of ``mmslak.ops.peripheral_depthwise_conv2d`` (separable
box filters, about k'² multiply-adds per pixel) and of the dense K×K paths a layer would otherwise take
(expand the kernel, then ``F.conv2d`` in NCHW or channels_last, or ``mmslak.ops.depthwise_conv2d``),
and the speed-up over the best dense path measured in the same run. Timings on a shared machine are
noisy: compare ratios within one run.

    python tools/analysis/benchmark_peripheral.py --threads 2 [--dtype bf16]

``--dtype bf16`` runs every path on bfloat16 tensors (the C++ kernels compute them in float32 and round once).

The paths are timed call by call in interleaved rounds, so the load of a shared machine spreads over
all of them; paths slower than ``--max-seconds`` per call are timed twice only (101×101 in NCHW takes
seconds per call).
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from mmslak.models.layers import peripheral_conv_channels, peripheral_grid
from mmslak.ops import depthwise_conv2d, expand_peripheral_kernel, peripheral_depthwise_conv2d

# (label, block width, feature size at 224² input, kernel size, width-1 centre cells)
SHAPES = [
    ('PeLK-T stage 1, K=51', 124, 56, 51, 5),
    ('PeLK-101 kernel at stage 1, K=101', 124, 56, 101, 7),
    ('PeLK-T stage 2, K=49', 249, 28, 49, 5),
    ('PeLK-T stage 3, K=47', 499, 14, 47, 5),
]
CONV_RATIO = 3 / 8
DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16}


def dense_conv(x, weight, grid):
    return F.conv2d(x, expand_peripheral_kernel(weight, grid), padding=sum(grid) // 2, groups=x.shape[1])


def dense_mmslak(x, weight, grid):
    return depthwise_conv2d(x, expand_peripheral_kernel(weight, grid))


PATHS = [
    # (name, function, channels_last input, is the fast path)
    ('peripheral (ours), NCHW', peripheral_depthwise_conv2d, False, True),
    ('peripheral (ours), channels_last', peripheral_depthwise_conv2d, True, True),
    ('dense F.conv2d, NCHW', dense_conv, False, False),
    ('dense F.conv2d, channels_last', dense_conv, True, False),
    ('dense mmslak.ops.depthwise_conv2d', dense_mmslak, False, False),
]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--threads', type=int, default=torch.get_num_threads(), help='torch threads')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--dtype', default='fp32', choices=sorted(DTYPES), help='dtype of every path')
    parser.add_argument('--repeats', type=int, default=10, help='timed rounds per measurement')
    parser.add_argument('--max-seconds', type=float, default=1.0,
                        help='calls slower than this are repeated only twice')
    return parser.parse_args()


def timed_ms(run):
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) * 1e3


def benchmark_shape(x, weight, grid, repeats, max_seconds):
    """(forward, fwd+bwd) per path as (median ms, fastest ms) pairs, the paths interleaved call by call.

    Interleaving spreads the load of a shared machine over all paths. A path whose first (warm-up)
    call exceeds ``max_seconds`` is timed in the first two rounds only.
    """
    grad_out = torch.randn_like(x)
    inputs = {False: x, True: x.contiguous(memory_format=torch.channels_last)}
    runs = []
    for name, function, channels_last, _ in PATHS:
        inp = inputs[channels_last]

        def forward(function=function, inp=inp):
            with torch.no_grad():
                function(inp, weight, grid)

        def forward_backward(function=function, inp=inp):
            x_grad, w_grad = inp.detach().requires_grad_(), weight.detach().requires_grad_()
            function(x_grad, w_grad, grid).backward(grad_out)

        for run in (forward, forward_backward):
            slow = timed_ms(run) > max_seconds * 1e3  # warm-up: first-call dispatch, allocations
            runs.append((run, 2 if slow else repeats, []))
    for round_index in range(repeats):
        for run, rounds, times in runs:
            if round_index < rounds:
                times.append(timed_ms(run))
    stats = [(statistics.median(times), min(times)) for _, _, times in runs]
    return list(zip(stats[0::2], stats[1::2]))


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = DTYPES[args.dtype]
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, {args.dtype}, '
          f'median and fastest of {args.repeats} calls (ms)')
    for label, width, size, kernel, centre in SHAPES:
        grid = peripheral_grid(kernel, center_size=centre)
        channels = peripheral_conv_channels(width, CONV_RATIO)
        x = torch.randn(args.batch, channels, size, size).to(dtype)
        weight = (torch.randn(channels, 1, len(grid), len(grid)) * 0.01).to(dtype)
        print(f'\n{label}: C={channels} {size}x{size}, grid {grid} (k\'={len(grid)}; '
              f'{len(grid) ** 2} vs {kernel ** 2} taps)')
        print(f'  {"path":36s} {"forward median/min":>20s} {"fwd+bwd median/min":>20s}')
        timings = benchmark_shape(x, weight, grid, args.repeats, args.max_seconds)
        for (name, *_), (forward, forward_backward) in zip(PATHS, timings):
            print(f'  {name:36s} {forward[0]:11.2f}/{forward[1]:<8.2f} '
                  f'{forward_backward[0]:11.2f}/{forward_backward[1]:<8.2f}', flush=True)
        dense = [timing for (_, _, _, fast), timing in zip(PATHS, timings) if not fast]
        for (name, _, _, fast), timing in zip(PATHS, timings):
            if fast:
                ratios = [min(d[step][stat] for d in dense) / timing[step][stat]
                          for step in (0, 1) for stat in (0, 1)]
                print(f'  {name}: speed-up over the best dense path (medians/mins): forward '
                      f'{ratios[0]:.1f}x/{ratios[1]:.1f}x, fwd+bwd {ratios[2]:.1f}x/{ratios[3]:.1f}x')

if __name__ == '__main__':
    main()

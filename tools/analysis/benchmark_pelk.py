"""PeLK-T against SLaK-T: forward + backward time of the backbone on this machine.

Prints median times and the ratio to SLaK-T measured in the same run (timings on a shared machine
are noisy; only ratios within one run are meaningful):

    python tools/analysis/benchmark_pelk.py --threads 2 --batch 2 --size 224

Variants: PeLK-T with the default ``'kernel'`` embedding (dense K x K kernels), and with
``pos_embed=None`` (piecewise-constant kernels, the fast peripheral path).
"""
import argparse
import statistics
import time

import torch

from mmslak.models import PeLK, SLaK

VARIANTS = {
    'SLaK-T': lambda: SLaK(arch='tiny'),
    "PeLK-T (pos_embed='kernel')": lambda: PeLK(arch='tiny'),
    'PeLK-T (pos_embed=None)': lambda: PeLK(arch='tiny', pos_embed=None),
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--threads', type=int, default=torch.get_num_threads(), help='torch threads')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--size', type=int, default=224, help='input height and width')
    parser.add_argument('--repeats', type=int, default=5, help='timed rounds after one warm-up')
    return parser.parse_args()


def forward_backward_seconds(model, images):
    start = time.perf_counter()
    model(images)[0].sum().backward()
    elapsed = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return elapsed


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = torch.rand(args.batch, 3, args.size, args.size)
    models = {name: build().train() for name, build in VARIANTS.items()}
    for model in models.values():  # warm-up: allocators, caches, one-time backend choices
        forward_backward_seconds(model, images)
    # Rounds visit every variant in turn, so load from other processes spreads over all of them.
    times = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, model in models.items():
            times[name].append(forward_backward_seconds(model, images))
    print(f'forward + backward, batch {args.batch}, {args.size}x{args.size}, {args.threads} threads, '
          f'median of {args.repeats} interleaved rounds')
    baseline = statistics.median(times['SLaK-T'])
    for name, samples in times.items():
        seconds = statistics.median(samples)
        print(f'{name:<30} {seconds:8.2f} s   x{seconds / baseline:.2f} of SLaK-T')


if __name__ == '__main__':
    main()

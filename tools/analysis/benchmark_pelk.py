"""PeLK-T against SLaK-T: training-step and inference time of the backbone on this machine.

Prints median times and the ratio to SLaK-T measured in the same run (timings on a shared machine
are noisy; only ratios within one run are meaningful):

    python tools/analysis/benchmark_pelk.py --threads 2 --batch 2 --size 224

Variants: PeLK-T with the default ``'kernel'`` embedding (dense K x K kernels), and with
``pos_embed=None`` (piecewise-constant kernels, the fast peripheral path). Inference is timed after
``switch_to_deploy()`` (the paper's throughput comparison is of inference).
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


def seconds(step):
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def interleaved_medians(steps, repeats):
    """Median time of every step; rounds visit every step in turn, so load from other processes
    spreads over all of them. One warm-up call each (allocators, caches, backend choices)."""
    for step in steps.values():
        step()
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            times[name].append(seconds(step))
    return {name: statistics.median(samples) for name, samples in times.items()}


def report(title, medians):
    print(title)
    baseline = medians['SLaK-T']
    for name, median in medians.items():
        print(f'  {name:<30} {median:8.3f} s   x{median / baseline:.2f} of SLaK-T')


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = torch.rand(args.batch, 3, args.size, args.size)
    models = {name: build().train() for name, build in VARIANTS.items()}
    setting = (f'batch {args.batch}, {args.size}x{args.size}, {args.threads} threads, median of '
               f'{args.repeats} interleaved rounds')

    def train_step(model):
        def step():
            model(images)[0].sum().backward()
            model.zero_grad(set_to_none=True)
        return step

    report(f'forward + backward (train mode), {setting}',
           interleaved_medians({name: train_step(model) for name, model in models.items()}, args.repeats))

    def inference_step(model):
        @torch.no_grad()
        def step():
            model(images)
        return step

    for model in models.values():
        model.eval().switch_to_deploy()
    report(f'forward after switch_to_deploy (eval, no grad), {setting}',
           interleaved_medians({name: inference_step(model) for name, model in models.items()}, args.repeats))


if __name__ == '__main__':
    main()

"""What SparseTrainingHook costs on a SLaK backbone, measured against an AdamW step of the same weights.

Prints median times and ratios to the dense AdamW step measured in the same run (timings on a shared
machine are noisy; only ratios within one run are meaningful):

    python tools/analysis/benchmark_sparse_hook.py --arch tiny --threads 2

Rows: the AdamW step of all weights (baseline); the mask re-apply the hook adds after every step; one
mask update (prune by magnitude + regrow, every ``update_interval`` steps) with random and with
gradient growth, also amortised over the official intervals (2000 steps for T, 100 for S and B).
Gradients are random: the optimizer and the hook do not care where they come from.
"""
import argparse
import statistics
import time
from types import SimpleNamespace

import torch
from mmengine.logging import MMLogger
from mmengine.optim import OptimWrapper

from mmslak.engine import SparseTrainingHook
from mmslak.models import SLaK


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--arch', default='tiny', choices=['tiny', 'small', 'base'])
    parser.add_argument('--threads', type=int, default=torch.get_num_threads(), help='torch threads')
    parser.add_argument('--repeats', type=int, default=5, help='timed repetitions after one warm-up')
    return parser.parse_args()


def median_seconds(function, repeats):
    times = []
    for repetition in range(repeats + 1):
        start = time.perf_counter()
        function()
        if repetition:  # the first run warms up allocators and caches
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def build_runner(arch):
    """The parts of a Runner the hook uses: a model, an OptimWrapper with AdamW, no other hooks, a logger."""
    torch.manual_seed(0)
    model = SLaK(arch=arch)
    for param in model.parameters():
        param.grad = torch.randn_like(param)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    logger = MMLogger.get_instance('benchmark_sparse_hook', log_level='WARNING')
    return SimpleNamespace(model=model, optim_wrapper=OptimWrapper(optimizer), hooks=[], iter=0,
                           max_iters=10**6, seed=0, logger=logger)


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    runner = build_runner(args.arch)
    hook = SparseTrainingHook(init='erk', update_interval=10**6, params='model')
    hook.before_train(runner)
    hook.after_train(runner)  # detach from the optimizer: the re-apply is timed on its own below
    optimizer = runner.optim_wrapper.optimizer
    dense_step = median_seconds(optimizer.step, args.repeats)
    rows = [('AdamW step (baseline)', dense_step),
            ('mask re-apply (after every step)', median_seconds(hook.apply_masks, args.repeats))]
    interval = 2000 if args.arch == 'tiny' else 100
    for growth in ('random', 'gradient'):
        hook.growth = growth
        update = median_seconds(lambda: hook.update_masks(runner), args.repeats)
        rows += [(f'mask update, {growth} growth', update),
                 (f'  amortised over {interval} steps', update / interval)]

    weights = sum(mask.numel() for mask in hook.masks.values())
    print(f'SLaK-{args.arch[0].upper()}: {len(hook.masks)} sparse weights, {weights / 1e6:.1f}M entries, '
          f'{args.threads} threads, median of {args.repeats}')
    for name, seconds in rows:
        print(f'{name:<36} {seconds * 1e3:9.1f} ms   x{seconds / dense_step:.3f} of the AdamW step')


if __name__ == '__main__':
    main()

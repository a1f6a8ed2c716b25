"""CPU speed of SLaK against mmpretrain's ConvNeXt and against SLaK on the PyTorch backend, in one run.

Usage:
    python tools/analysis/benchmark_backbones.py [--arch tiny] [--threads 2] [--size 224] [--repeat 10]

Measures, with ``torch.set_num_threads(THREADS)``:

* forward, batch 1, eval mode, no grad;
* training step, batch 2: forward in train mode, ``output.mean()`` as loss, backward (no optimizer).

for ConvNeXt (``mmpretrain.models.ConvNeXt(arch)``), SLaK with ``MMSLAK_DWCONV_BACKEND=torch`` (F.conv2d for
every large kernel, which is what the official code amounts to on a CPU), and SLaK with the automatic
backend choice, before and after :meth:`~mmslak.models.SLaK.switch_to_deploy`. Each time is the median of
``--repeat`` runs after warm-up; the table prints every time as a ratio to ConvNeXt's in the same run,
because on a shared machine only such ratios are comparable between runs.
"""
import argparse
import copy
import os
import statistics
import time
from contextlib import contextmanager

import torch

from mmslak.ops.dispatch import BACKEND_ENV_VAR


@contextmanager
def forced_backend(name):
    previous = os.environ.get(BACKEND_ENV_VAR)
    if name is None:
        os.environ.pop(BACKEND_ENV_VAR, None)
    else:
        os.environ[BACKEND_ENV_VAR] = name
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(BACKEND_ENV_VAR, None)
        else:
            os.environ[BACKEND_ENV_VAR] = previous


def forward_step(model, size):
    x = torch.rand(1, 3, size, size)

    def step():
        model.eval()
        with torch.no_grad():
            model(x)

    return step


def train_step(model, size):
    x = torch.rand(2, 3, size, size)

    def step():
        model.train()
        model.zero_grad(set_to_none=True)
        sum(out.mean() for out in model(x)).backward()

    return step


def interleaved_medians(cases, repeat, warmup):
    """Median seconds of every case; rounds run every case once, so load changes hit all alike."""
    times = {key: [] for key in cases}
    for round_index in range(warmup + repeat):
        for key, (backend, step) in cases.items():
            with forced_backend(backend):
                start = time.perf_counter()
                step()
                elapsed = time.perf_counter() - start
            if round_index >= warmup:
                times[key].append(elapsed)
    return {key: statistics.median(values) for key, values in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description='SLaK vs ConvNeXt speed on this CPU.')
    parser.add_argument('--arch', default='tiny', help='arch of both ConvNeXt and SLaK (default: tiny)')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--repeat', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from mmpretrain.models import ConvNeXt

    from mmslak.models import SLaK
    convnext = ConvNeXt(arch=args.arch)
    slak = SLaK(arch=args.arch)
    deployed = copy.deepcopy(slak).eval().switch_to_deploy()
    size = args.size
    cases = {
        ('ConvNeXt', 'forward b1'): (None, forward_step(convnext, size)),
        ('ConvNeXt', 'train step b2'): (None, train_step(convnext, size)),
        ('SLaK, torch backend', 'forward b1'): ('torch', forward_step(slak, size)),
        ('SLaK, torch backend', 'train step b2'): ('torch', train_step(slak, size)),
        ('SLaK', 'forward b1'): (None, forward_step(slak, size)),
        ('SLaK', 'train step b2'): (None, train_step(slak, size)),
        ('SLaK, deploy', 'forward b1'): (None, forward_step(deployed, size)),
    }
    medians = interleaved_medians(cases, args.repeat, args.warmup)

    print(f'arch {args.arch}, {size}x{size}, {torch.get_num_threads()} threads, median of {args.repeat} '
          'interleaved runs')
    print(f'{"model":22}{"task":16}{"ms":>10}{"x ConvNeXt":>12}')
    for (name, task), seconds in medians.items():
        print(f'{name:22}{task:16}{seconds * 1e3:10.1f}{seconds / medians[("ConvNeXt", task)]:12.2f}')
    return medians


if __name__ == '__main__':
    main()

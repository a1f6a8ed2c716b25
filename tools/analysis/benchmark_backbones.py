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


def median_time(step, repeat, warmup):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def forward_time(model, size, repeat, warmup):
    model.eval()
    x = torch.rand(1, 3, size, size)

    def step():
        with torch.no_grad():
            model(x)

    return median_time(step, repeat, warmup)


def train_step_time(model, size, repeat, warmup):
    model.train()
    x = torch.rand(2, 3, size, size)

    def step():
        model.zero_grad(set_to_none=True)
        outs = model(x)
        sum(out.mean() for out in outs).backward()

    return median_time(step, repeat, warmup)


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
    measure = dict(repeat=args.repeat, warmup=args.warmup)
    rows = [('ConvNeXt', 'forward b1', forward_time(convnext, args.size, **measure)),
            ('ConvNeXt', 'train step b2', train_step_time(convnext, args.size, **measure))]
    with forced_backend('torch'):
        rows += [('SLaK, torch backend', 'forward b1', forward_time(slak, args.size, **measure)),
                 ('SLaK, torch backend', 'train step b2', train_step_time(slak, args.size, **measure))]
    with forced_backend(None):
        rows += [('SLaK', 'forward b1', forward_time(slak, args.size, **measure)),
                 ('SLaK', 'train step b2', train_step_time(slak, args.size, **measure))]
        slak.eval().switch_to_deploy()
        rows.append(('SLaK, deploy', 'forward b1', forward_time(slak, args.size, **measure)))

    baseline = {task: seconds for name, task, seconds in rows if name == 'ConvNeXt'}
    print(f'arch {args.arch}, {args.size}x{args.size}, {torch.get_num_threads()} threads, '
          f'median of {args.repeat} runs')
    print(f'{"model":22}{"task":16}{"ms":>10}{"x ConvNeXt":>12}')
    for name, task, seconds in rows:
        print(f'{name:22}{task:16}{seconds * 1e3:10.1f}{seconds / baseline[task]:12.2f}')
    return rows


if __name__ == '__main__':
    main()

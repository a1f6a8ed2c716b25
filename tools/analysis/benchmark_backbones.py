"""Speed of SLaK and PeLK against ConvNeXt, per dtype, on the CPU or a CUDA GPU, in one run.

Usage:
    python tools/analysis/benchmark_backbones.py [--arch tiny] [--threads 2] [--dtype fp32,bf16]
    python tools/analysis/benchmark_backbones.py --device cuda --dtype fp32,bf16,fp16

Measures for each dtype (``fp32``; ``bf16`` / ``fp16`` run under ``torch.autocast`` of that dtype, i.e. AMP):

* forward, eval mode, no grad (batch 1 on the CPU, 64 on CUDA: ``--forward-batch``);
* training step: forward in train mode, ``output.mean()`` summed over the outputs as loss, backward, no
  optimizer (batch 2 on the CPU, 16 on CUDA: ``--train-batch``);

for ConvNeXt (mmpretrain's, or torchvision's ``convnext_<arch>`` when mmpretrain is absent), SLaK with the
automatic backend choice, SLaK after :meth:`~mmslak.models.SLaK.switch_to_deploy` (forward only), PeLK, and,
on the CPU in fp32, SLaK with ``MMSLAK_DWCONV_BACKEND=torch`` (F.conv2d for every large kernel, what the
official code amounts to). The rows ``...: Linear only`` time the Linear layers of ConvNeXt's and deployed
SLaK's forward alone (each on inputs of the shape the forward gives it): the blocks' MLPs, whose cost grows
with the square of the width, so SLaK's 1.3x widths make their ratio a floor for the whole forward's. Each
time is the median of ``--repeat`` interleaved rounds after warm-up (CUDA times are synchronised). The
table gives images/s, the ratio to ConvNeXt's time for the same task and dtype, and the ratio of the model's
fp32 time to this dtype's (its low-precision speed-up), because on a shared machine only ratios within one
run are comparable.
"""
import argparse
import copy
import os
import statistics
import sys
import time
from contextlib import contextmanager, nullcontext

import torch

from mmslak.ops.dispatch import BACKEND_ENV_VAR

DTYPES = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
DEFAULT_BATCHES = {'cpu': (1, 2), 'cuda': (64, 16)}  # (forward, train step)
LINEAR_ONLY = ('ConvNeXt', 'SLaK, deploy')  # models whose Linear layers are also timed alone


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


def precision(device, dtype):
    """Autocast context for ``dtype`` (None: float32, no autocast)."""
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def forward_step(model, x, dtype):
    def step():
        model.eval()
        with torch.no_grad(), precision(x.device, dtype):
            model(x)

    return step


def train_step(model, x, dtype):
    def step():
        model.train()
        model.zero_grad(set_to_none=True)
        with precision(x.device, dtype):
            outputs = model(x)
            outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs, )
            loss = sum(out.float().mean() for out in outputs)
        loss.backward()

    return step


def linear_layers_step(model, x, dtype):
    """Every nn.Linear of ``model`` alone, as one forward of ``x`` calls it (input shapes, autocast)."""
    shapes = []
    hooks = [module.register_forward_hook(lambda module, args, output: shapes.append((module, args[0].shape)))
             for module in model.modules() if isinstance(module, torch.nn.Linear)]
    try:
        forward_step(model, x, None)()
    finally:
        for hook in hooks:
            hook.remove()
    calls = [(module, torch.rand(shape, device=x.device)) for module, shape in shapes]

    def step():
        with torch.no_grad(), precision(x.device, dtype):
            for module, inputs in calls:
                module(inputs)

    return step


def interleaved_medians(cases, repeat, warmup, device):
    """Median seconds of every case; rounds run every case once, so load changes hit all alike."""
    times = {key: [] for key in cases}
    synchronize = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    for round_index in range(warmup + repeat):
        for key, (backend, step) in cases.items():
            with forced_backend(backend):
                synchronize()
                start = time.perf_counter()
                step()
                synchronize()
                elapsed = time.perf_counter() - start
            if round_index >= warmup:
                times[key].append(elapsed)
        print(f'round {round_index + 1} of {warmup + repeat} done', file=sys.stderr, flush=True)
    return {key: statistics.median(values) for key, values in times.items()}


def build_convnext(arch):
    try:
        from mmpretrain.models import ConvNeXt
    except ImportError:
        import torchvision
        return torchvision.models.get_model(f'convnext_{arch}')
    return ConvNeXt(arch=arch)


def parse_args(argv):
    parser = argparse.ArgumentParser(description='SLaK and PeLK vs ConvNeXt speed per dtype.')
    parser.add_argument('--arch', default='tiny', help='arch of ConvNeXt, SLaK and PeLK (default: tiny)')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--dtype', default='fp32', help='comma-separated: fp32, bf16, fp16 (default: fp32)')
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads')
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--forward-batch', type=int, help='default: 1 on the CPU, 64 on CUDA')
    parser.add_argument('--train-batch', type=int, help='default: 2 on the CPU, 16 on CUDA')
    parser.add_argument('--repeat', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    args = parser.parse_args(argv)
    args.dtypes = [name.strip() for name in args.dtype.split(',') if name.strip()]
    unknown = [name for name in args.dtypes if name not in DTYPES]
    if unknown or not args.dtypes:
        parser.error(f'--dtype takes a comma-separated list of {", ".join(DTYPES)}, got {args.dtype!r}')
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda but torch sees no CUDA device')
    default_forward, default_train = DEFAULT_BATCHES[args.device]
    args.forward_batch = args.forward_batch or default_forward
    args.train_batch = args.train_batch or default_train
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)

    from mmslak.models import PeLK, SLaK
    slak = SLaK(arch=args.arch).to(device)
    models = {
        'ConvNeXt': build_convnext(args.arch).to(device),
        'SLaK': slak,
        'SLaK, deploy': copy.deepcopy(slak).eval().switch_to_deploy(),
        'PeLK': PeLK(arch=args.arch).to(device),
    }
    forward_x = torch.rand(args.forward_batch, 3, args.size, args.size, device=device)
    train_x = torch.rand(args.train_batch, 3, args.size, args.size, device=device)
    forward_task, train_task = f'forward b{args.forward_batch}', f'train step b{args.train_batch}'
    cases = {}
    for dtype_name in args.dtypes:
        dtype = DTYPES[dtype_name]
        for name, model in models.items():
            cases[(name, forward_task, dtype_name)] = (None, forward_step(model, forward_x, dtype))
            if name in LINEAR_ONLY:
                cases[(f'{name}: Linear only', forward_task, dtype_name)] = (
                    None, linear_layers_step(model, forward_x, dtype))
            if name != 'SLaK, deploy':
                cases[(name, train_task, dtype_name)] = (None, train_step(model, train_x, dtype))
        if device.type == 'cpu' and dtype is None:
            cases[('SLaK, torch backend', forward_task, dtype_name)] = ('torch', forward_step(slak, forward_x, dtype))
            cases[('SLaK, torch backend', train_task, dtype_name)] = ('torch', train_step(slak, train_x, dtype))
    medians = interleaved_medians(cases, args.repeat, args.warmup, device)

    where = f'{torch.get_num_threads()} threads' if device.type == 'cpu' else torch.cuda.get_device_name(device)
    print(f'arch {args.arch}, {args.size}x{args.size}, {args.device} ({where}), median of {args.repeat} '
          'interleaved runs')
    print(f'{"model":30}{"task":18}{"dtype":>6}{"ms":>10}{"images/s":>10}{"x ConvNeXt":>12}{"x fp32":>8}')
    for (name, task, dtype_name), seconds in medians.items():
        batch = args.forward_batch if task == forward_task else args.train_batch
        fp32 = medians.get((name, task, 'fp32'))
        speedup = f'{fp32 / seconds:8.2f}' if fp32 is not None and dtype_name != 'fp32' else f'{"":8}'
        # Linear-only rows compare with ConvNeXt's Linear layers, the other rows with ConvNeXt's model.
        reference = 'ConvNeXt: Linear only' if name.endswith(': Linear only') else 'ConvNeXt'
        print(f'{name:30}{task:18}{dtype_name:>6}{seconds * 1e3:10.1f}{batch / seconds:10.1f}'
              f'{seconds / medians[(reference, task, dtype_name)]:12.2f}{speedup}')
    return medians


if __name__ == '__main__':
    main()

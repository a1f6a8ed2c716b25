"""Export a SLaK / PeLK classifier, segmentor or detector (backbone + neck) to ONNX and check it.

Usage:
    python tools/deployment/pytorch2onnx.py CONFIG [CHECKPOINT] --out FILE [--shape H W] [--dynamic]
        [--part model|backbone|neck] [--deploy] [--exporter dynamo|torchscript] [--merge-decomposed]

The file holds standard ONNX operators only (mmslak's convolutions become ``Conv`` with ``group = C`` and
``Add``, see :mod:`mmslak.deployment.onnx`), so ONNX Runtime, TensorRT and OpenVINO run it without a
plugin. Its input ``input`` is the normalised RGB batch (N, 3, H, W) that the config's
``data_preprocessor`` produces; its outputs are:

* a classifier: ``logits`` (N, num_classes);
* a segmentor (UperNet): ``seg_logits`` (N, num_classes, H, W), the decode head's logits resized to the
  input, as ``EncoderDecoder`` predicts in ``'whole'`` mode before its argmax;
* a detector: backbone + neck (``neck_0`` ... ``neck_4``, the FPN levels); the RPN, RoI heads and NMS
  stay in PyTorch. ``--part backbone`` exports the backbone alone for any model.

After export the tool runs the file with ONNX Runtime on a random input and compares every output with
the PyTorch model: ``max |onnx - torch| / max |torch|`` must stay below ``--rtol`` (1e-4, fp32), at the
export shape and, with ``--dynamic``, at a second shape through the same file; it prints the median
forward time of both. It exits 1 when the check fails, 2 for a bad command line.
"""
import argparse
import os.path as osp
import statistics
import sys
import time
import warnings

import torch
from mmengine.config import Config, DictAction
from mmengine.registry import MODELS, init_default_scope
from mmengine.runner import load_checkpoint
from mmengine.utils import import_modules_from_strings

from mmslak.deployment import (EXPORTERS, PARTS, export_onnx, exportable, model_task, onnx_op_types,
                               onnxruntime_session, relative_error)
from mmslak.models import switch_to_deploy
from mmslak.utils.cli import UserError, check_cfg_options, one_line_user_errors
from mmslak.utils.quiet import ignore_stack_warnings

DEFAULT_SHAPES = {'classification': (224, 224), 'segmentation': (512, 512), 'detection': (512, 512)}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Export a model to ONNX and check it with ONNX Runtime.')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint; without it the weights are random')
    parser.add_argument('--out', required=True, help='the .onnx file to write')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input height and width (default: 224 224 for a classifier, 512 512 otherwise)')
    parser.add_argument('--dynamic', action='store_true',
                        help='dynamic input height and width (also the batch with the TorchScript exporter)')
    parser.add_argument('--check-shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='second input size checked with --dynamic (default: H + 32, W + 64)')
    parser.add_argument('--part', choices=PARTS,
                        help='what to export (default: the whole classifier or segmentor, a detector\'s '
                        'backbone + neck)')
    parser.add_argument('--deploy', action='store_true',
                        help='switch_to_deploy() first: fold BatchNorms and branches into one kernel per block')
    parser.add_argument('--exporter', choices=EXPORTERS, default='dynamo', help='torch.onnx exporter')
    parser.add_argument('--opset', type=int, default=18, help='ONNX opset (default 18)')
    parser.add_argument('--merge-decomposed', action='store_true',
                        help='one K x K Conv per SLaK block instead of a Conv per kernel plus Add (more '
                        'multiply-adds, slower in ONNX Runtime)')
    parser.add_argument('--rtol', type=float, default=1e-4,
                        help='largest accepted max|onnx - torch| / max|torch| (default 1e-4)')
    parser.add_argument('--threads', type=int, default=torch.get_num_threads(),
                        help='threads of PyTorch and ONNX Runtime for the timings (default: PyTorch\'s)')
    parser.add_argument('--repeat', type=int, default=5, help='timed runs per engine (median printed)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config keys, e.g. model.backbone.arch=small')
    return parser.parse_args(argv)


def check_args(args):
    if not osp.isfile(args.config):
        raise UserError(f'config file not found: {args.config}')
    if args.checkpoint and not osp.isfile(args.checkpoint):
        raise UserError(f'checkpoint file not found: {args.checkpoint}')
    for name in ('shape', 'check_shape'):
        shape = getattr(args, name)
        if shape is not None and min(shape) < 32:
            raise UserError(f'--{name.replace("_", "-")} must be at least 32 32 (the backbones downsample 32x), '
                            f'got {shape[0]} {shape[1]}')
    if args.check_shape and not args.dynamic:
        raise UserError('--check-shape needs --dynamic: a static file takes its export shape only')
    if args.repeat < 1 or args.threads < 1:
        raise UserError('--repeat and --threads must be at least 1')
    if not 0 < args.rtol < 1:
        raise UserError(f'--rtol must be in (0, 1), got {args.rtol}')
    out_dir = osp.dirname(osp.abspath(args.out))
    if not osp.isdir(out_dir):
        raise UserError(f'the directory of --out does not exist: {out_dir}')


def build_model(args):
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        check_cfg_options(cfg, args.cfg_options)
        cfg.merge_from_dict(args.cfg_options)
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(cfg.get('default_scope', 'mmslak'))
    model = MODELS.build(cfg.model)
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True)
    else:
        warnings.warn('no checkpoint given: the exported weights are random (the check still compares '
                      'ONNX Runtime with PyTorch)', UserWarning, 2)
    model.eval()
    if args.deploy:
        switch_to_deploy(model)
    return model


def median_ms(run, repeat):
    run()  # warm-up: first-call allocations and ONNX Runtime's lazy initialisation
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def output_names(prefix, outputs):
    return [prefix] if isinstance(outputs, torch.Tensor) else [f'{prefix}_{i}' for i in range(len(outputs))]


def check(module, session, names, shape, args):
    """Compare ONNX Runtime with PyTorch at ``shape``; print the errors and timings; True when within rtol."""
    inputs = torch.randn(1, 3, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = module(inputs)
    reference = [reference] if isinstance(reference, torch.Tensor) else list(reference)
    feed = {session.get_inputs()[0].name: inputs.numpy()}
    results = session.run(None, feed)
    errors = [relative_error(ref, res) for ref, res in zip(reference, results)]
    worst = max(errors)
    verdict = 'OK' if worst <= args.rtol else 'FAILED'
    print(f'check at 1x3x{shape[0]}x{shape[1]}: max|onnx - torch| / max|torch| = {worst:.2e} (limit '
          f'{args.rtol:.0e}) {verdict}')
    for name, ref, error in zip(names, reference, errors):
        print(f'  {name:12} {str(tuple(ref.shape)):24} {error:.2e}')
    with torch.no_grad():
        torch_ms = median_ms(lambda: module(inputs), args.repeat)
    onnx_ms = median_ms(lambda: session.run(None, feed), args.repeat)
    threads = f'{args.threads} thread{"s" if args.threads > 1 else ""}'
    print(f'  forward time, {threads}, median of {args.repeat}: PyTorch {torch_ms:.1f} ms, '
          f'ONNX Runtime {onnx_ms:.1f} ms ({onnx_ms / torch_ms:.2f}x PyTorch\'s)')
    return worst <= args.rtol


def main(argv=None):
    ignore_stack_warnings()
    args = parse_args(argv)
    with one_line_user_errors(osp.basename(__file__)):
        check_args(args)
        torch.set_num_threads(args.threads)
        print(f'building {args.config}', flush=True)
        model = build_model(args)
        try:
            module, what, prefix = exportable(model, args.part)
        except ValueError as error:
            raise UserError(str(error)) from None
        shape = tuple(args.shape or DEFAULT_SHAPES.get(model_task(model), (224, 224)))
        inputs = torch.randn(1, 3, *shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            names = output_names(prefix, module(inputs))
        print(f'exporting {what} at 1x3x{shape[0]}x{shape[1]}{" (dynamic H, W)" if args.dynamic else ""} '
              f'with the {args.exporter} exporter, opset {args.opset}', flush=True)
        export_onnx(module, inputs, args.out, exporter=args.exporter, dynamic=args.dynamic,
                    opset_version=args.opset, merge_decomposed=args.merge_decomposed, output_names=names)
        counts = onnx_op_types(args.out)
        size_mb = sum(osp.getsize(p) for p in (args.out, args.out + '.data') if osp.exists(p)) / 2**20
        print(f'wrote {args.out} ({size_mb:.1f} MB): ' +
              ', '.join(f'{op} {count}' for op, count in sorted(counts.items(), key=lambda kv: -kv[1])))
        custom = [op for op in counts if '::' in op]
        if custom:
            print(f'error: the file holds non-standard operators: {custom}', file=sys.stderr)
            return 1
        session = onnxruntime_session(args.out, args.threads)
        shapes = [shape]
        if args.dynamic:
            shapes.append(tuple(args.check_shape or (shape[0] + 32, shape[1] + 64)))
        passed = all([check(module, session, names, s, args) for s in shapes])
    if not passed:
        print(f'error: ONNX Runtime differs from PyTorch by more than {args.rtol:.0e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())

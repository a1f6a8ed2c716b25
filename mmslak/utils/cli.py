"""Shared plumbing of ``tools/train.py`` and ``tools/test.py``: config loading, one-line user errors, the Runner."""
import argparse
import logging
import os
import os.path as osp
import sys
from contextlib import contextmanager

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.registry import MODELS, RUNNERS, DefaultScope
from mmengine.runner import Runner

from mmslak.engine.checkpoint import (CheckpointReadError, checkpoint_mismatch, find_resumable_checkpoint,
                                      read_checkpoint, remove_interrupted_writes)
from mmslak.engine.cpu_runtime import configure_cpu_runtime
from mmslak.utils.quiet import ignore_stack_warnings, quiet_runner_logger


class UserError(Exception):
    """A mistake in the command line or the config, reported as one line without a traceback."""


@contextmanager
def one_line_user_errors(prog):
    """Turn :class:`UserError` into ``prog: error: message`` on stderr and exit status 2."""
    try:
        yield
    except UserError as err:
        print(f'{prog}: error: {err}', file=sys.stderr)
        sys.exit(2)


def add_common_args(parser):
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='directory for logs and checkpoints (default: work_dirs/<config name>)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, default={},
        help='override existing config keys, e.g. "train_cfg.max_iters=100 model.backbone.drop_path_rate=0.2"; '
        'a key may be new only inside a dict with a "type" (a constructor argument)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none', help='job launcher')
    # torchrun passes --local-rank to old-style scripts; the value is also in $LOCAL_RANK.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)


def _lookup(node, part):
    if isinstance(node, (list, tuple)):
        if not part.isdigit() or int(part) >= len(node):
            raise KeyError(part)
        return node[int(part)]
    if isinstance(node, dict):
        return node[part]
    raise KeyError(part)


def check_cfg_options(cfg, options):
    """Refuse ``--cfg-options`` keys that do not exist in ``cfg``.

    mmengine silently adds unknown keys, so a typo (``optim_wraper.lr``) would train with the default. A new key
    is accepted only as a constructor argument: directly inside a dict that has a ``type``.

    Raises:
        UserError: naming the first unknown key and the keys available at that level.
    """
    tree = cfg.to_dict()
    for key in options:
        node = tree
        parts = key.split('.')
        for depth, part in enumerate(parts):
            try:
                node = _lookup(node, part)
            except KeyError:
                is_last = depth == len(parts) - 1
                if is_last and isinstance(node, dict) and 'type' in node:
                    break
                where = '.'.join(parts[:depth]) or 'the top level'
                known = (sorted(node.keys()) if isinstance(node, dict) else
                         f'indices 0..{len(node) - 1}' if isinstance(node, (list, tuple)) else 'none')
                raise UserError(f'--cfg-options key "{key}" does not exist in the config ("{part}" is not under '
                                f'{where}; available: {known})') from None


def load_config(args):
    """Load ``args.config``, apply and check ``--cfg-options``, set the work dir and the launcher.

    From here on the warnings of the installed stack that a user cannot act on are filtered
    (:func:`mmslak.utils.quiet.ignore_stack_warnings`): loading an OpenMMLab config emits the first.
    """
    ignore_stack_warnings()
    if not osp.isfile(args.config):
        raise UserError(f'config file {args.config} does not exist')
    try:
        cfg = Config.fromfile(args.config)
    except Exception as err:  # a syntax error or a missing base is the user's config, not our bug
        raise UserError(f'cannot load config {args.config}: {type(err).__name__}: {err}') from None
    check_cfg_options(cfg, args.cfg_options)
    cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    for where, checkpoint in pretrained_checkpoints(cfg.to_dict().get('model')):
        check_checkpoint(checkpoint, f'{where} checkpoint')
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg


def pretrained_checkpoints(node, where='model'):
    """Yield ``(config path, checkpoint)`` of every ``init_cfg=dict(type='Pretrained', ...)`` under ``node``."""
    if isinstance(node, dict):
        if node.get('type') == 'Pretrained' and node.get('checkpoint'):
            yield where, node['checkpoint']
        for key, value in node.items():
            yield from pretrained_checkpoints(value, f'{where}.{key}')
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            yield from pretrained_checkpoints(value, f'{where}.{index}')


def check_checkpoint(path, what='checkpoint'):
    """Refuse a local checkpoint path that does not exist (URLs and remote schemes are left to mmengine)."""
    if path and '://' not in path and not osp.isfile(osp.expanduser(path)):
        raise UserError(f'{what} {path} does not exist')


def check_checkpoint_readable(path, what='checkpoint'):
    """Refuse a local checkpoint that does not exist or cannot be read (truncated, overwritten, not a checkpoint).

    Returns:
        dict: the checkpoint, memory-mapped (see :func:`mmslak.engine.checkpoint.read_checkpoint`).
    """
    check_checkpoint(path, what)
    try:
        return read_checkpoint(osp.expanduser(path))
    except CheckpointReadError as err:
        raise UserError(f'{what} {path} cannot be read: {err}') from None


def find_checkpoint_to_resume(work_dir):
    """``--resume`` without a file: the newest readable checkpoint of ``work_dir``, or None for a fresh start.

    Newer checkpoints that cannot be read are skipped with a warning naming each and why; temporary files of
    saves that a kill interrupted are deleted (by one process of a distributed run).

    Raises:
        UserError: the work dir has checkpoints but none can be read.
    """
    if os.environ.get('RANK', os.environ.get('SLURM_PROCID', '0')) == '0':
        for path in remove_interrupted_writes(work_dir):
            print_log(f'removed {path}, left by an interrupted checkpoint save', logger='current')
    checkpoint, skipped = find_resumable_checkpoint(work_dir)
    for path, reason in skipped:
        print_log(f'--resume: skipping {path}, it cannot be read: {reason}', logger='current',
                  level=logging.WARNING)
    if checkpoint is None and skipped:
        raise UserError(f'--resume: no checkpoint in {work_dir} can be read ({len(skipped)} broken, the newest '
                        f'{skipped[0][0]}: {skipped[0][1]}); remove them to start afresh')
    if checkpoint is not None:
        print_log(f'--resume: resuming from {checkpoint}', logger='current')
    return checkpoint


def check_checkpoint_fits_model(cfg, checkpoint, what):
    """Refuse to resume from a checkpoint written by another architecture than ``cfg.model``.

    MMEngine resumes with a non-strict load, which would continue training with some weights silently left at
    their initial values (or fail later on the optimizer state). The model is built on the ``meta`` device:
    names and shapes without memory or initialisation.
    """
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')), torch.device('meta'):
        model = MODELS.build(cfg.model)
    mismatch = checkpoint_mismatch(model, checkpoint['state_dict'])
    if mismatch:
        raise UserError(f'{what} {cfg.load_from} does not fit the config\'s model: {mismatch}; resume with the '
                        'config that wrote it, or use another --work-dir')


def build_runner(cfg, launcher, amp=False):
    """Fit ``cfg`` to this machine and build its Runner.

    On a GPU machine ``amp`` selects mmengine's float16 ``AmpOptimWrapper``; without a GPU the run uses
    gloo DDP and bfloat16 autocast (:func:`mmslak.engine.cpu_runtime.configure_cpu_runtime`).
    """
    if torch.cuda.is_available():
        if amp:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    else:
        try:
            configure_cpu_runtime(cfg, launcher, amp=amp)
        except (RuntimeError, ValueError, KeyError) as err:
            raise UserError(str(err)) from None
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    quiet_runner_logger(runner.logger)
    return runner


def close_process_group():
    """End a distributed run cleanly: destroy the process group before the interpreter exits.

    PyTorch asks for this at the end of every distributed program; left to interpreter shutdown, the
    communication threads of a rank can be torn down while still running ('terminate called without an
    active exception', seen once on a 2-process gloo run).
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def run_tool(prog, runner_from_args, args, action):
    """The body of ``tools/train.py`` and ``tools/test.py``: build the runner, run ``action``, end cleanly.

    Args:
        prog (str): the tool's name, which starts every one-line error.
        runner_from_args (Callable): ``args -> Runner``; raises :class:`UserError` for bad input.
        args (argparse.Namespace): the parsed command line.
        action (str): the runner's method to call, ``'train'`` or ``'test'``.
    """
    # data_check builds on this module's UserError, so it is imported here, not at the top
    from mmslak.utils.data_check import data_errors_named
    with one_line_user_errors(prog):
        runner = runner_from_args(args)
        with data_errors_named():
            getattr(runner, action)()
    close_process_group()

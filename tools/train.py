"""Train a detector, segmentor or classifier from a config; the config's ``default_scope`` picks the task.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CHECKPOINT]] [--amp] [--cfg-options K=V ...]
    bash tools/dist_train.sh CONFIG GPUS_OR_PROCESSES [...]

Without a GPU, ``--amp`` means bfloat16 autocast on the CPU, and ``--launcher pytorch`` runs
DistributedDataParallel over gloo.
"""
import argparse
import os.path as osp

import mmslak  # noqa: F401  (registers our modules and installs safe checkpoint loading)
from mmslak.utils.cli import (add_common_args, build_runner, check_checkpoint, close_process_group,
                              load_config, one_line_user_errors)


def parse_args():
    parser = argparse.ArgumentParser(description='Train a model with an mmslak / OpenMMLab config')
    add_common_args(parser)
    parser.add_argument(
        '--resume', nargs='?', const='auto', default=None, metavar='CHECKPOINT',
        help='resume from CHECKPOINT, or from the latest checkpoint in the work dir when none is given')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision: float16 AMP on a GPU, bfloat16 autocast on a CPU')
    return parser.parse_args()


def runner_from_args(args):
    cfg = load_config(args)
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        check_checkpoint(args.resume, '--resume checkpoint')
        cfg.resume, cfg.load_from = True, args.resume
    check_checkpoint(cfg.get('load_from'), 'load_from checkpoint')
    return build_runner(cfg, args.launcher, amp=args.amp)


def main():
    args = parse_args()
    with one_line_user_errors(osp.basename(__file__)):
        runner = runner_from_args(args)
    runner.train()
    close_process_group()


if __name__ == '__main__':
    main()

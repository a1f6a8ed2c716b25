"""Train a detector, segmentor or classifier from a config; the config's ``default_scope`` picks the task.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CHECKPOINT]] [--amp] [--cfg-options K=V ...]
    bash tools/dist_train.sh CONFIG GPUS_OR_PROCESSES [...]

Without a GPU, ``--amp`` means bfloat16 autocast on the CPU, and ``--launcher pytorch`` runs
DistributedDataParallel over gloo.
"""
import argparse
import os.path as osp

import mmslak  # noqa: F401  (registers our modules and installs safe checkpoint loading)
from mmslak.utils.cli import (add_common_args, build_runner, check_checkpoint, check_checkpoint_fits_model,
                              check_checkpoint_readable, find_checkpoint_to_resume,
                              load_config, run_tool)
from mmslak.utils.data_check import TRAIN_LOADERS, check_class_counts, check_data_paths


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
    check_data_paths(cfg, TRAIN_LOADERS)
    check_class_counts(cfg, TRAIN_LOADERS)
    if args.resume is None:
        check_checkpoint(cfg.get('load_from'), 'load_from checkpoint')
    else:
        if args.resume == 'auto':
            checkpoint_file, what = find_checkpoint_to_resume(cfg.work_dir), 'newest checkpoint'
        else:
            checkpoint_file, what = args.resume, '--resume checkpoint'
        # without a checkpoint (an empty work dir) the run starts from the beginning
        cfg.resume, cfg.load_from = checkpoint_file is not None, checkpoint_file
        if checkpoint_file is not None:
            check_checkpoint_fits_model(cfg, check_checkpoint_readable(checkpoint_file, what), what)
    return build_runner(cfg, args.launcher, amp=args.amp)


def main():
    run_tool(osp.basename(__file__), runner_from_args, parse_args(), 'train')


if __name__ == '__main__':
    main()

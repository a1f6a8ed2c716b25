"""Evaluate a checkpoint with the config's test evaluator (mIoU, VOC mAP, COCO AP, top-1...).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out results.pkl] [--show-dir DIR]
    bash tools/dist_test.sh CONFIG CHECKPOINT PROCESSES [...]
"""
import argparse
import os.path as osp

import mmslak  # noqa: F401  (registers our modules and installs safe checkpoint loading)
from mmslak.utils.cli import (UserError, add_common_args, build_runner, check_checkpoint_readable,
                              load_config, run_tool)
from mmslak.utils.data_check import TEST_LOADERS, check_class_counts, check_data_paths

# The stock visualization hooks of each task and the argument naming their output directory.
VISUALIZATION_HOOKS = {
    'DetVisualizationHook': ('draw', 'test_out_dir'),
    'SegVisualizationHook': ('draw', None),  # mmseg writes to the visualizer's save_dir
    'VisualizationHook': ('enable', 'out_dir'),  # mmpretrain
}


def parse_args():
    parser = argparse.ArgumentParser(description='Test a checkpoint with an mmslak / OpenMMLab config')
    add_common_args(parser)
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='dump the raw predictions to this pickle file (.pkl)')
    parser.add_argument('--show-dir', help='write prediction images (boxes, masks, segmentation overlays) here')
    return parser.parse_args()


def enable_visualization(cfg, show_dir):
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None or hook.get('type') not in VISUALIZATION_HOOKS:
        raise UserError('--show-dir needs default_hooks.visualization to be one of '
                        f'{sorted(VISUALIZATION_HOOKS)} in the config')
    switch, dir_arg = VISUALIZATION_HOOKS[hook['type']]
    hook[switch] = True
    show_dir = osp.abspath(show_dir)
    if dir_arg is None:
        cfg.visualizer['save_dir'] = show_dir
    else:
        hook[dir_arg] = show_dir


def add_dump_results(cfg, out):
    if not out.endswith(('.pkl', '.pickle')):
        raise UserError(f'--out must be a .pkl file, got {out}')
    evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [cfg.test_evaluator]
    cfg.test_evaluator = [*evaluators, dict(type='DumpResults', out_file_path=out)]


def runner_from_args(args):
    cfg = load_config(args)
    check_data_paths(cfg, TEST_LOADERS)
    check_class_counts(cfg, TEST_LOADERS)
    check_checkpoint_readable(args.checkpoint)
    cfg.load_from = args.checkpoint
    if args.show_dir:
        enable_visualization(cfg, args.show_dir)
    if args.out:
        add_dump_results(cfg, args.out)
    return build_runner(cfg, args.launcher)


def main():
    run_tool(osp.basename(__file__), runner_from_args, parse_args(), 'test')


if __name__ == '__main__':
    main()

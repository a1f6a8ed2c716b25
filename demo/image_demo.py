"""Run a SLaK / PeLK model on one image and write its visualised prediction.

Usage:
    python demo/image_demo.py IMAGE CONFIG [CHECKPOINT] --out-file OUT [--device cpu]
        [--pred-score-thr 0.3] [--topk 5] [--opacity 0.5]

The config's ``default_scope`` picks the task and the stock OpenMMLab inferencer that runs it:

* ``mmseg``: ``MMSegInferencer``; OUT is the image with the predicted classes overlaid;
* ``mmdet``: ``DetInferencer``; OUT is the image with the boxes (and masks) scoring at least
  ``--pred-score-thr``;
* ``mmpretrain``: ``ImageClassificationInferencer``; OUT is the image with the top-``--topk`` classes
  and their scores written on it (also printed).

Without CHECKPOINT the model keeps its random initial weights: the script warns, and the picture shows
what such a model predicts.
"""
import argparse
import os.path as osp
import sys
import warnings

import mmcv
import numpy as np
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.utils import import_modules_from_strings

from mmslak.utils.cli import UserError, one_line_user_errors
from mmslak.utils.quiet import build_inferencer, ignore_stack_warnings

TASKS = {'mmseg': 'segmentation', 'mmdet': 'detection', 'mmpretrain': 'classification'}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Visualise the prediction of a model on one image.')
    parser.add_argument('image', help='image file')
    parser.add_argument('config', help='config file (its default_scope picks the task)')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint; without it the weights are random')
    parser.add_argument('--out-file', required=True, help='where to write the visualised prediction')
    parser.add_argument('--device', default='cpu', help='device, e.g. cpu or cuda:0 (default: cpu)')
    parser.add_argument('--pred-score-thr', type=float, default=0.3,
                        help='detection: draw boxes scoring at least this (default 0.3)')
    parser.add_argument('--topk', type=int, default=5, help='classification: classes drawn (default 5)')
    parser.add_argument('--opacity', type=float, default=0.5,
                        help='segmentation: opacity of the overlaid classes (default 0.5)')
    return parser.parse_args(argv)


def check_args(args):
    for name in ('image', 'config', 'checkpoint'):
        path = getattr(args, name)
        if path and not osp.isfile(path):
            raise UserError(f'{name} file not found: {path}')
    out_dir = osp.dirname(osp.abspath(args.out_file))
    if not osp.isdir(out_dir):
        raise UserError(f'the directory of --out-file does not exist: {out_dir}')
    if not 0 <= args.pred_score_thr <= 1 or not 0 <= args.opacity <= 1:
        raise UserError('--pred-score-thr and --opacity must be in [0, 1]')
    if args.topk < 1:
        raise UserError(f'--topk must be at least 1, got {args.topk}')


def config_task(cfg):
    scope = cfg.get('default_scope')
    if scope not in TASKS:
        raise UserError(f'the config\'s default_scope is {scope!r}; this demo runs {", ".join(TASKS)} '
                        'configs (segmentation, detection, classification)')
    return TASKS[scope]


def config_metainfo(cfg):
    """``classes`` and ``palette`` of the config's test dataset (its ``metainfo`` over its class's).

    The inferencers take them from a checkpoint; without one they would name Cityscapes or COCO classes.
    """
    from mmengine.registry import DATASETS
    dataset = cfg.get('test_dataloader', {}).get('dataset', {})
    metainfo = {}
    if dataset.get('type'):
        metainfo.update(getattr(DATASETS.get(dataset['type']), 'METAINFO', {}))
    metainfo.update(dataset.get('metainfo') or {})
    classes = metainfo.get('classes')
    return dict(classes=list(classes) if classes else None, palette=metainfo.get('palette'))


def use_config_metainfo(inferencer, cfg):
    """Name the config's classes (and use its palette) in the drawings of an inferencer without checkpoint."""
    meta = {key: value for key, value in config_metainfo(cfg).items() if value is not None}
    inferencer.model.dataset_meta = {**inferencer.model.dataset_meta, **meta}
    inferencer.visualizer.dataset_meta = inferencer.model.dataset_meta


def segment(args, cfg):
    from mmseg.apis import MMSegInferencer
    inferencer = build_inferencer(MMSegInferencer, model=cfg, weights=args.checkpoint, device=args.device)
    if not args.checkpoint:
        use_config_metainfo(inferencer, cfg)
    result = inferencer(args.image, return_vis=True, opacity=args.opacity)
    # for one image MMSegInferencer returns the arrays themselves, not lists of one
    prediction, visualization = result['predictions'], result['visualization']
    classes = inferencer.model.dataset_meta['classes']
    print('predicted classes: ' + ', '.join(f'{classes[i]} ({np.mean(prediction == i):.0%})'
                                            for i in np.unique(prediction)))
    return visualization


def detect(args, cfg):
    from mmdet.apis import DetInferencer
    inferencer = build_inferencer(DetInferencer, model=cfg, weights=args.checkpoint, device=args.device,
                                  show_progress=False)
    if not args.checkpoint:
        use_config_metainfo(inferencer, cfg)
    result = inferencer(args.image, return_vis=True, no_save_vis=True, pred_score_thr=args.pred_score_thr)
    prediction = result['predictions'][0]
    kept = [score for score in prediction['scores'] if score >= args.pred_score_thr]
    print(f'{len(kept)} detections scoring at least {args.pred_score_thr}')
    return result['visualization'][0]


def classify(args, cfg):
    from mmengine.visualization import Visualizer
    from mmpretrain.apis import ImageClassificationInferencer
    classes = None if args.checkpoint else config_metainfo(cfg)['classes']
    inferencer = build_inferencer(ImageClassificationInferencer, model=cfg, pretrained=args.checkpoint or False,
                                  device=args.device, classes=classes)
    scores = np.asarray(inferencer(args.image)[0]['pred_scores'])
    classes = inferencer.classes or [f'class {i}' for i in range(len(scores))]
    top = np.argsort(-scores)[:args.topk]
    print('\n'.join(f'{rank}. {classes[i]}: {scores[i]:.3f}' for rank, i in enumerate(top, 1)))
    # ImageNet names list synonyms after commas: the first one is drawn
    lines = [f'{rank}. {classes[i].split(",")[0]}: {scores[i]:.3f}' for rank, i in enumerate(top, 1)]
    image = mmcv.imread(args.image, channel_order='rgb')
    height, width = image.shape[:2]
    # as large as fits: about 0.7 font size per character across, 1.4 per line down
    font_size = max(6, min(height // (1.4 * len(lines) + 1), width // (0.7 * max(map(len, lines)) + 1), 24))
    visualizer = Visualizer(image=image)
    positions = np.array([[2, 2 + row * font_size * 1.4] for row in range(len(lines))])
    visualizer.draw_texts(lines, positions, font_sizes=int(font_size), colors='white', vertical_alignments='top',
                          bboxes=[dict(facecolor='black', alpha=0.6, pad=1, edgecolor='none')] * len(lines))
    return visualizer.get_image()


def main(argv=None):
    ignore_stack_warnings()
    args = parse_args(argv)
    with one_line_user_errors(osp.basename(__file__)):
        check_args(args)
        cfg = Config.fromfile(args.config)
        task = config_task(cfg)
        if cfg.get('custom_imports'):
            import_modules_from_strings(**cfg.custom_imports)
        init_default_scope(cfg.default_scope)
        if not args.checkpoint:
            warnings.warn('no checkpoint given: the model\'s weights are random, so its prediction is too',
                          UserWarning, 2)
        run = {'segmentation': segment, 'detection': detect, 'classification': classify}[task]
        visualization = run(args, cfg)
        mmcv.imwrite(mmcv.rgb2bgr(visualization), args.out_file)
        print(f'{task} result drawn on {args.image}: {args.out_file}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""Effective receptive field (ERF) of a backbone, by the protocol of RepLKNet, SLaK and PeLK.

Usage:
    python tools/analysis/visualize_erf.py CONFIG [CHECKPOINT] --images DIR [--num-images 50] [--size 1024]
        --out-dir OUT [--compare CONFIG2 [CKPT2] ...] [--labels NAME ...] [--cfg-options K=V ...]

The protocol of RepLKNet's ``erf/visualize_erf.py`` and ``erf/analyze_erf.py``, which the SLaK and PeLK
papers use for their ERF figures:

1. Every image is resized to SxS (bicubic; 1024 in the papers) and normalised as the model's training data
   (the config's data preprocessor; ImageNet statistics in RGB without one). Batch 1, eval mode.
2. The output of the backbone's last stage, before the final norm, gives the score
   ``relu(out[:, :, H // 2, W // 2]).sum()``: the ReLU'd central activation summed over channels.
3. The gradient of the score with respect to the input is ReLU'd, summed over channels and averaged over
   the N images (an image whose gradient holds a NaN is skipped and the next one read).
4. The mean is mapped to ``log10(x + 1)`` and divided by its maximum.
5. For t in 20%, 30%, 50% and 99%: the smallest centred square (odd side, centred on pixel (S//2, S//2))
   that holds at least t of the map's total, printed as ``t=20% side=... area_ratio=...`` (side² / S²).
   When even the largest centred square holds less, the whole image counts: side S, area ratio 1.

Images are the files with an image extension under DIR (recursively, in sorted order: an ImageNet-style
``val/<class>/*.JPEG`` tree works as it is). Without CHECKPOINT the model gets its config's
initialisation (an untrained model, or the config's pretrained backbone).

Writes ``OUT/erf.npy`` (the SxS map of step 4), ``OUT/erf_raw.npy`` (the mean of step 3) and
``OUT/erf.png`` (heatmap with a colour bar). With ``--compare`` every model writes these files to
``OUT/<label>/`` and ``OUT/erf_compare.png`` shows the models side by side with a table of the area ratios.
"""
import argparse
import logging
import os
import os.path as osp
import pickle
import re

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from mmengine.config import DictAction
from mmengine.logging import MMLogger
from mmengine.registry import MODELS, init_default_scope
from mmengine.runner import load_checkpoint
from mmengine.utils import ProgressBar
from PIL import Image, UnidentifiedImageError

import mmslak  # noqa: F401  (registers our modules and installs safe checkpoint loading)
from mmslak.utils.cli import UserError, check_checkpoint, load_config, one_line_user_errors

THRESHOLDS = (0.2, 0.3, 0.5, 0.99)
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
# The backbones' total stride: a smaller input leaves the last stage without a centre.
MIN_SIZE = 32
# mmcv/torchvision ImageNet statistics on the 0-255 scale, RGB: RepLKNet's normalisation.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
COLOUR_MAP = 'RdYlGn'  # RepLKNet's; high contribution is green


def build_model(config, checkpoint=None, cfg_options=None):
    """Build ``config``'s model in eval mode, with ``checkpoint`` loaded strictly or the config's own init.

    Config and checkpoint errors follow ``tools/train.py`` and ``tools/test.py``
    (:func:`mmslak.utils.cli.load_config`): a missing file or a bad ``--cfg-options`` key is a
    :class:`~mmslak.utils.cli.UserError`.

    Returns:
        tuple[Config, nn.Module]: the loaded config and the model.
    """
    cfg = load_config(argparse.Namespace(config=config, cfg_options=cfg_options or {}, launcher='none',
                                         work_dir=None))
    check_checkpoint(checkpoint)
    init_default_scope(cfg.get('default_scope', 'mmslak'))
    model = MODELS.build(cfg.model)
    if checkpoint:
        # Refused: a file torch cannot read (truncated, not allow-listed), or keys and shapes that do not match.
        try:
            load_checkpoint(model, checkpoint, map_location='cpu', strict=True, logger='silent')
        except (RuntimeError, EOFError, pickle.UnpicklingError) as err:
            summary = ' '.join(str(err).split())[:300]
            raise UserError(f'cannot load checkpoint {checkpoint} into the model of {config}: {summary}') from None
    else:
        # mmengine logs every parameter's initialisation to the console when no log file is open.
        logger = MMLogger.get_current_instance()
        level = logger.level
        logger.setLevel(logging.WARNING)
        try:
            model.init_weights()
        finally:
            logger.setLevel(level)
    return cfg, model.eval()


def last_stage(model):
    """The backbone of ``model`` (or ``model`` itself) and its last stage, ``backbone.stages[-1]``.

    Raises:
        UserError: the backbone has no ``stages`` (SLaK, PeLK and the ConvNeXt-style backbones have them).
    """
    backbone = getattr(model, 'backbone', model)
    stages = getattr(backbone, 'stages', None)
    if not isinstance(stages, torch.nn.Module) or len(stages) == 0:
        raise UserError(f'{type(backbone).__name__} has no stages[-1]: the ERF needs a backbone whose last '
                        'stage is backbone.stages[-1] (SLaK, PeLK, ConvNeXt)')
    return backbone, stages[-1]


def input_contribution(backbone, stage, image):
    """ReLU'd gradient of the central last-stage activation w.r.t. ``image``, summed over channels.

    Args:
        backbone (nn.Module): runs ``image`` through ``stage``.
        stage (nn.Module): the last stage, whose output (before the final norm) is read with a hook.
        image (Tensor): (1, C, S, S) normalised input.

    Returns:
        Tensor: (S, S) contribution of every input pixel to ``relu(out[:, :, H // 2, W // 2]).sum()``.
    """
    image = image.detach().requires_grad_(True)
    outputs = []
    handle = stage.register_forward_hook(lambda module, args, output: outputs.append(output))
    try:
        backbone(image)
    finally:
        handle.remove()
    out = outputs[-1]
    if out.shape[2] == 0 or out.shape[3] == 0:
        raise UserError(f'the last stage output is empty for a {image.shape[2]}x{image.shape[3]} input; '
                        'use a larger --size')
    score = F.relu(out[:, :, out.shape[2] // 2, out.shape[3] // 2]).sum()
    grad, = torch.autograd.grad(score, image)
    return F.relu(grad).sum((0, 1))


def mean_contribution(model, images, num_images):
    """Average of :func:`input_contribution` over the first ``num_images`` images without NaN.

    Args:
        model (nn.Module): a backbone or a model with one (see :func:`last_stage`), in eval mode.
        images (Iterable[Tensor]): (1, C, S, S) normalised inputs.
        num_images (int): how many images to average.

    Returns:
        tuple[np.ndarray, int, int]: the (S, S) float64 mean, the images averaged and the images skipped.
    """
    backbone, stage = last_stage(model)
    total, used, skipped = None, 0, 0
    progress = ProgressBar(num_images)
    for image in images:
        if used == num_images:
            break
        contribution = input_contribution(backbone, stage, image).double()
        if torch.isnan(contribution).any():
            skipped += 1
            continue
        total = contribution if total is None else total + contribution
        used += 1
        progress.update()
    if used == 0:
        raise UserError('no image gave a finite gradient')
    return (total / used).cpu().numpy(), used, skipped


def normalise(raw):
    """``log10(raw + 1)`` divided by its maximum (RepLKNet: the scores differ by orders of magnitude)."""
    erf = np.log10(raw + 1)
    peak = erf.max()
    if peak <= 0:
        raise UserError('the ERF is zero everywhere: the central activation is not positive for any image')
    return erf / peak


def high_contribution_area(erf, thresholds=THRESHOLDS):
    """Side and area ratio of the smallest centred square holding each threshold's share of ``erf``.

    Squares have odd sides 1, 3, 5, ... centred on pixel ``(H // 2, W // 2)``; when the largest one that
    fits holds less than the threshold, the whole map counts (side ``max(H, W)``, ratio 1).

    Args:
        erf (np.ndarray): (H, W) non-negative map.
        thresholds (Sequence[float]): shares of the total, in (0, 1].

    Returns:
        list[tuple[float, int, float]]: ``(threshold, side, area ratio)`` per threshold.
    """
    height, width = erf.shape
    cy, cx = height // 2, width // 2
    # Integral image: the sum over rows [a, b) and columns [c, d) is I[b, d] - I[a, d] - I[b, c] + I[a, c].
    integral = np.pad(erf.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    radii = np.arange(min(cy, cx, height - 1 - cy, width - 1 - cx) + 1)
    top, bottom, left, right = cy - radii, cy + radii + 1, cx - radii, cx + radii + 1
    square_sums = integral[bottom, right] - integral[top, right] - integral[bottom, left] + integral[top, left]
    fractions = square_sums / integral[-1, -1]
    results = []
    for threshold in thresholds:
        reached = np.flatnonzero(fractions >= threshold)
        if reached.size:
            side = 2 * int(reached[0]) + 1
            results.append((threshold, side, side * side / (height * width)))
        else:
            results.append((threshold, max(height, width), 1.0))
    return results


def format_areas(areas):
    return [f't={threshold:.0%} side={side} area_ratio={ratio:.5f}' for threshold, side, ratio in areas]


def find_images(directory):
    """Image files under ``directory`` (recursively), sorted; a UserError if there is none."""
    if not osp.isdir(directory):
        raise UserError(f'--images directory {directory} does not exist')
    paths = sorted(
        osp.join(root, name) for root, _, names in os.walk(directory) for name in names
        if name.lower().endswith(IMAGE_EXTENSIONS))
    if not paths:
        raise UserError(f'--images directory {directory} holds no image files ({", ".join(IMAGE_EXTENSIONS)})')
    return paths


def read_image(path, size):
    """``path`` as an RGB uint8 array resized to ``size`` x ``size`` with bicubic interpolation."""
    try:
        with Image.open(path) as image:
            return np.array(image.convert('RGB').resize((size, size), Image.BICUBIC))
    except (UnidentifiedImageError, OSError) as err:
        raise UserError(f'cannot read image {path}: {err}') from None


def input_normalisation(cfg):
    """``(mean, std, rgb)`` the model was trained with, from the config's data preprocessor.

    mmseg and mmdet name the channel flip ``bgr_to_rgb``, mmpretrain ``to_rgb`` (its preprocessor is a
    top-level config key); without a preprocessor, RepLKNet's ImageNet normalisation in RGB.
    """
    preprocessor = cfg.model.get('data_preprocessor') or cfg.get('data_preprocessor') or {}
    mean = preprocessor.get('mean', IMAGENET_MEAN)
    std = preprocessor.get('std', IMAGENET_STD)
    rgb = preprocessor.get('bgr_to_rgb', preprocessor.get('to_rgb', 'mean' not in preprocessor))
    return mean, std, rgb


def normalised_inputs(images, mean, std, rgb):
    """Yield every RGB uint8 image as a (1, 3, S, S) float tensor normalised like the training data."""
    mean = torch.tensor(mean, dtype=torch.float32).reshape(1, 3, 1, 1)
    std = torch.tensor(std, dtype=torch.float32).reshape(1, 3, 1, 1)
    for image in images:
        tensor = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).float()
        if not rgb:
            tensor = tensor.flip(1)  # mmcv reads BGR; a preprocessor without the flip trained on BGR
        yield (tensor - mean) / std


def draw_heatmap(axes, erf, title):
    image = axes.imshow(erf, cmap=COLOUR_MAP, vmin=0, vmax=1, interpolation='nearest')
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_title(title, fontsize=10)
    return image


def save_heatmap(erf, path, title):
    figure = Figure(figsize=(4.6, 4))
    axes = figure.add_subplot()
    figure.colorbar(draw_heatmap(axes, erf, title), ax=axes, fraction=0.046, pad=0.04)
    figure.savefig(path, dpi=100, bbox_inches='tight')


def save_comparison(results, path, size):
    """Side-by-side heatmaps of ``results`` (label, erf, areas) with one colour bar and a table below."""
    count = len(results)
    figure = Figure(figsize=(2.8 * count + 1, 4.8))
    grid = figure.add_gridspec(2, count, height_ratios=[3.2, 1.3], hspace=0.3)
    heatmaps = [figure.add_subplot(grid[0, column]) for column in range(count)]
    for axes, (label, erf, _) in zip(heatmaps, results):
        image = draw_heatmap(axes, erf, label)
    figure.colorbar(image, ax=heatmaps, fraction=0.02, pad=0.02)
    table_axes = figure.add_subplot(grid[1, :])
    table_axes.axis('off')
    cells = [[f'{side} px, {ratio:.1%}' for _, side, ratio in areas] for _, _, areas in results]
    table_axes.table(cellText=[list(row) for row in zip(*cells)], rowLabels=[f't={t:.0%}' for t in THRESHOLDS],
                     colLabels=[label for label, _, _ in results], cellLoc='center', bbox=[0.08, 0, 0.92, 1])
    table_axes.set_title(f'side and area ratio of the smallest centred square holding t of the ERF '
                         f'({size}x{size} input)', fontsize=9)
    figure.savefig(path, dpi=100, bbox_inches='tight')


def parse_models(config, checkpoint, compare):
    """``[(config, checkpoint or None), ...]``: the main model, then each ``--compare`` config with the
    checkpoint that follows it, if any."""
    models = [(config, checkpoint)]
    for token in compare or []:
        if token.endswith('.py'):
            models.append((token, None))
        elif len(models) > 1 and models[-1][1] is None:
            models[-1] = (models[-1][0], token)
        else:
            raise UserError(f'--compare: {token} is neither a config (.py) nor the checkpoint following one')
    return models


def model_labels(models, labels):
    if labels is None:
        labels = [osp.splitext(osp.basename(config))[0] for config, _ in models]
    elif len(labels) != len(models):
        raise UserError(f'--labels needs one name per model ({len(models)}), got {len(labels)}')
    if len(set(labels)) != len(labels):
        raise UserError(f'--labels must be distinct (they name the output folders), got {labels}')
    for label in labels:
        if not re.fullmatch(r'[\w.+-][\w .+-]*', label):
            raise UserError(f'--labels: {label!r} cannot name a folder (use letters, digits, ".+-_" and spaces)')
    return labels


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Effective receptive field of a backbone (RepLKNet protocol).')
    parser.add_argument('config', help='model config')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint (default: the config\'s initialisation)')
    parser.add_argument('--images', required=True, help='directory of images (searched recursively)')
    parser.add_argument('--num-images', type=int, default=50, help='images to average (default: 50)')
    parser.add_argument('--size', type=int, default=1024, help='input side S (default: 1024)')
    parser.add_argument('--out-dir', required=True, help='output directory')
    parser.add_argument('--compare', nargs='+', metavar='CONFIG [CHECKPOINT]',
                        help='more models, each a config optionally followed by its checkpoint')
    parser.add_argument('--labels', nargs='+', help='names of the models in the figures (default: config names)')
    parser.add_argument('--device', default='cpu', help='torch device (default: cpu)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override keys of CONFIG (not of the --compare configs)')
    return parser.parse_args(argv)


def main(argv=None):
    """Run the tool; returns ``{label: (erf, areas)}``."""
    args = parse_args(argv)
    with one_line_user_errors(osp.basename(__file__)):
        if args.size < MIN_SIZE:
            raise UserError(f'--size must be at least {MIN_SIZE} (the backbone downsamples by 32), got {args.size}')
        if args.num_images < 1:
            raise UserError(f'--num-images must be at least 1, got {args.num_images}')
        models = parse_models(args.config, args.checkpoint, args.compare)
        labels = model_labels(models, args.labels)
        paths = find_images(args.images)
        if len(paths) < args.num_images:
            raise UserError(f'--images directory {args.images} holds {len(paths)} images, fewer than '
                            f'--num-images {args.num_images}')
        images = [read_image(path, args.size) for path in paths]
        results = []
        for (config, checkpoint), label in zip(models, labels):
            cfg, model = build_model(config, checkpoint, args.cfg_options if config == args.config else None)
            model.requires_grad_(False).to(args.device)  # only the input's gradient is needed
            print(f'[{label}] {config} {checkpoint or "(config initialisation)"}: {args.num_images} images '
                  f'of {args.size}x{args.size}')
            inputs = (image.to(args.device) for image in normalised_inputs(images, *input_normalisation(cfg)))
            raw, used, skipped = mean_contribution(model, inputs, args.num_images)
            print()
            if used < args.num_images:
                print(f'[{label}] averaged {used} images: {skipped} gave NaN gradients and the directory ran out')
            erf = normalise(raw)
            areas = high_contribution_area(erf)
            out_dir = args.out_dir if len(models) == 1 else osp.join(args.out_dir, label)
            os.makedirs(out_dir, exist_ok=True)
            np.save(osp.join(out_dir, 'erf.npy'), erf)
            np.save(osp.join(out_dir, 'erf_raw.npy'), raw)
            save_heatmap(erf, osp.join(out_dir, 'erf.png'), label)
            for line in format_areas(areas):
                print(f'[{label}] {line}' if len(models) > 1 else line)
            results.append((label, erf, areas))
        if len(models) > 1:
            save_comparison(results, osp.join(args.out_dir, 'erf_compare.png'), args.size)
            print(f'comparison: {osp.join(args.out_dir, "erf_compare.png")}')
    return {label: (erf, areas) for label, erf, areas in results}


if __name__ == '__main__':
    main()

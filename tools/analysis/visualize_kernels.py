"""The large kernels of a SLaK or PeLK model as pictures, and the layer densities of a sparse checkpoint.

Usage:
    python tools/analysis/visualize_kernels.py CONFIG [CHECKPOINT] --out-dir OUT [--cfg-options K=V ...]

Per stage s, ``OUT/stage{s}_kernels.png`` shows one panel per block: the mean over channels of |kernel|,
for the K x K kernel the block convolves with in inference (eval mode, BatchNorms folded with their running
statistics), computed by the model's own deploy merge:

* SLaK (:class:`~mmslak.models.layers.DecomposedLargeKernelConv`): ``merged_kernels()``, the (K, N),
  (N, K) and (N, N) branches merged (the N x N one folded into the (K, N) kernel); the two kernels are
  summed on the K x K window, which is the single kernel the block applies.
* PeLK (:class:`~mmslak.models.layers.PeripheralConv2d`): ``fused_kernel()``, the peripheral kernel with
  its BatchNorm, small branch and positional embedding, expanded to K x K, over the convolved channels
  only, with the borders of its sharing grid's cells drawn over it.

``OUT/stage{s}_kernels.npy`` holds the pictured maps (blocks, K, K). With CHECKPOINT, ``OUT/density.png``
plots the fraction of non-zero weights of every sparse layer (the weights the config's
``SparseTrainingHook`` or ``SparseFinetuneHook`` masks, ``params='backbone'`` without one) and prints the
total. Without CHECKPOINT the model has its config's initialisation.
"""
import argparse
import os
import os.path as osp

import numpy as np
import torch
from matplotlib.figure import Figure
from mmengine.config import DictAction

from mmslak.engine.sparse.param_selection import select_sparse_params
from mmslak.models.layers import DecomposedLargeKernelConv, PeripheralConv2d, pad_kernel
from mmslak.ops import expand_peripheral_kernel
from mmslak.utils.cli import UserError, one_line_user_errors
from visualize_erf import build_model, last_stage

SPARSE_HOOKS = ('SparseTrainingHook', 'SparseFinetuneHook')
PANELS_PER_ROW = 5


@torch.no_grad()
def inference_kernel(layer):
    """The (C, K, K) kernel ``layer`` convolves with in eval mode and its sharing grid (None for SLaK).

    Args:
        layer (DecomposedLargeKernelConv | PeripheralConv2d): a large-kernel layer.

    Returns:
        tuple[Tensor, list[int] | None]: the kernel (PeLK: the convolved channels only) and the grid.
    """
    if isinstance(layer, DecomposedLargeKernelConv):
        *kernels, _ = layer.merged_kernels()  # (long, wide, bias) or (weight, bias)
        size = (layer.kernel_size, layer.kernel_size)
        return sum(pad_kernel(kernel, size) for kernel in kernels)[:, 0], None
    kernel, _ = layer.fused_kernel()
    if kernel.shape[-1] != layer.kernel_size:  # a piecewise-constant kernel stays in cell form
        kernel = expand_peripheral_kernel(kernel, layer.grid)
    return kernel[:, 0], layer.grid


def stage_kernels(model):
    """``[[(mean |kernel| (K, K) array, grid), ...] per block] per stage`` of the model's backbone.

    Raises:
        UserError: the backbone has no SLaK or PeLK large-kernel layer.
    """
    backbone, _ = last_stage(model)
    stages = [[inference_kernel(module) for module in stage.modules()
               if isinstance(module, (DecomposedLargeKernelConv, PeripheralConv2d))] for stage in backbone.stages]
    if not any(stages):
        raise UserError(f'{type(backbone).__name__} has no SLaK or PeLK large-kernel layer to draw')
    return [[(kernel.abs().mean(0).cpu().numpy(), grid) for kernel, grid in blocks] for blocks in stages]


def draw_grid(axes, grid):
    """Cell borders of a sharing grid over a K x K image (pixel centres at integers)."""
    borders = np.cumsum(grid)[:-1] - 0.5
    for border in borders:
        axes.axhline(border, color='white', linewidth=0.5, alpha=0.8)
        axes.axvline(border, color='white', linewidth=0.5, alpha=0.8)


def save_stage_figure(blocks, stage_index, path):
    columns = min(len(blocks), PANELS_PER_ROW)
    rows = -(-len(blocks) // columns)
    figure = Figure(figsize=(3.0 * columns, 2.8 * rows), layout='constrained')
    for index, (kernel, grid) in enumerate(blocks):
        axes = figure.add_subplot(rows, columns, index + 1)
        image = axes.imshow(kernel, cmap='viridis', interpolation='nearest')
        size = kernel.shape[-1]
        sharing = grid is not None and max(grid) > 1
        if sharing:
            draw_grid(axes, grid)
        axes.set_title(f'block {index}: {size}x{size}' + (f', {len(grid)}x{len(grid)} cells' if sharing else ''),
                       fontsize=9)
        axes.set_xticks([])
        axes.set_yticks([])
        figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    figure.suptitle(f'stage {stage_index}: mean |kernel| over channels (inference form)', fontsize=10)
    figure.savefig(path, dpi=100, bbox_inches='tight')


def sparse_scope(cfg):
    """The ``params`` scope of the config's sparse hook, ``'backbone'`` without one."""
    for hook in cfg.get('custom_hooks', []):
        if hook.get('type', '').split('.')[-1] in SPARSE_HOOKS:
            return hook.get('params', 'backbone')
    return 'backbone'


def layer_densities(model, scope):
    """``[(name, non-zero weights, weights), ...]`` of the weights sparse training masks in ``scope``."""
    return [(name, int(torch.count_nonzero(param)), param.numel())
            for name, param in select_sparse_params(model, scope)]


def save_density_figure(densities, total, title, path):
    names = [name.removeprefix('backbone.') for name, _, _ in densities]
    figure = Figure(figsize=(7, 1.2 + 0.16 * len(densities)))
    axes = figure.add_subplot()
    positions = np.arange(len(densities))
    axes.barh(positions, [nonzero / size for _, nonzero, size in densities], color='tab:blue')
    axes.axvline(total, color='tab:red', linewidth=1, label=f'all sparse layers: {total:.3f}')
    axes.set_yticks(positions, names, fontsize=6)
    axes.invert_yaxis()
    axes.set_xlim(0, 1)
    axes.set_xlabel('non-zero fraction')
    axes.set_title(title, fontsize=9)
    axes.legend(loc='lower right', fontsize=8)
    figure.savefig(path, dpi=100, bbox_inches='tight')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Pictures of the large kernels, and a sparse checkpoint\'s '
                                     'layer densities.')
    parser.add_argument('config', help='model config')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint (default: the config\'s initialisation)')
    parser.add_argument('--out-dir', required=True, help='output directory')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={}, help='override config keys')
    return parser.parse_args(argv)


def main(argv=None):
    """Run the tool; returns the per-stage kernels and the layer densities (None without a checkpoint)."""
    args = parse_args(argv)
    with one_line_user_errors(osp.basename(__file__)):
        cfg, model = build_model(args.config, args.checkpoint, args.cfg_options)
        stages = stage_kernels(model)
    os.makedirs(args.out_dir, exist_ok=True)
    for index, blocks in enumerate(stages):
        if not blocks:
            continue
        np.save(osp.join(args.out_dir, f'stage{index}_kernels.npy'), np.stack([kernel for kernel, _ in blocks]))
        save_stage_figure(blocks, index, osp.join(args.out_dir, f'stage{index}_kernels.png'))
        print(f'stage {index}: {len(blocks)} kernels -> {osp.join(args.out_dir, f"stage{index}_kernels.png")}')
    if not args.checkpoint:
        print('layer densities: skipped (they need a CHECKPOINT)')
        return stages, None
    scope = sparse_scope(cfg)
    densities = layer_densities(model, scope)
    nonzero, weights = sum(count for _, count, _ in densities), sum(size for _, _, size in densities)
    if not weights:
        print(f'layer densities: skipped (no weight of the model is in the sparse scope params={scope!r})')
        return stages, densities
    path = osp.join(args.out_dir, 'density.png')
    save_density_figure(densities, nonzero / weights,
                        f'{osp.basename(args.checkpoint)}: non-zero fraction per layer (params={scope!r})', path)
    print(f'layer densities: {len(densities)} sparse layers (params={scope!r}), {nonzero}/{weights} weights '
          f'non-zero (density {nonzero / weights:.4f}) -> {path}')
    return stages, densities


if __name__ == '__main__':
    main()

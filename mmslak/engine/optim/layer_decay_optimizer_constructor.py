"""Layer-wise / stage-wise learning-rate decay for SLaK and PeLK backbones.

MMDetection's and MMSegmentation's ``LearningRateDecayOptimizerConstructor`` implement the ConvNeXt
recipe but refuse any backbone whose class name lacks ``'ConvNeXt'``. SLaK and PeLK keep ConvNeXt's
parameter layout (``backbone.downsample_layers.{i}``, ``backbone.stages.{s}.{b}``), so this constructor
applies the same rules to them under a name that mmdet's and mmseg's scopes cannot shadow.
"""
import re

from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor

from mmslak.registry import OPTIM_WRAPPER_CONSTRUCTORS, register_module

_DOWNSAMPLE = re.compile(r'^backbone\.downsample_layers\.(\d+)\.')
_STAGE = re.compile(r'^backbone\.stages\.(\d+)\.(\d+)?')


def get_layer_id_layer_wise(name, num_layers):
    """Layer id of a parameter under ConvNeXt's layer-wise rule.

    Stem → 0, stage 0 → 1, stage 1 and its downsampling → 2, stage 2 → 3 plus one per three blocks
    (its downsampling → 3), stage 3 and its downsampling → ``num_layers``, everything outside the
    backbone's stem/downsampling/stages (neck, heads, the backbone's output norms) → ``num_layers + 1``.
    A stage-level parameter that belongs to no single block (e.g. a positional embedding shared by a
    stage's blocks) takes the id of the stage's first block, the earliest layer that uses it.

    Args:
        name (str): parameter name relative to the detector/segmentor (``backbone.`` prefix).
        num_layers (int): the ``num_layers`` of ``paramwise_cfg``.

    Returns:
        int: layer id in ``[0, num_layers + 1]``.
    """
    match = _DOWNSAMPLE.match(name)
    if match:
        return (0, 2, 3, num_layers)[int(match.group(1))]
    match = _STAGE.match(name)
    if match:
        stage_id = int(match.group(1))
        if stage_id != 2:
            return (1, 2, None, num_layers)[stage_id]
        layer_id = 3 + int(match.group(2) or 0) // 3
        if layer_id >= num_layers:
            raise ValueError(
                f'num_layers={num_layers} is too small for layer-wise decay: {name} gets layer id '
                f'{layer_id}; stage 2 with d blocks needs num_layers >= 4 + (d - 1) // 3')
        return layer_id
    return num_layers + 1


def get_layer_id_stage_wise(name, num_layers):
    """Layer id of a parameter under ConvNeXt's stage-wise rule.

    Stem and downsampling layers → 0, stage ``s`` → ``s + 1``, everything else → ``num_layers + 1``.

    Args:
        name (str): parameter name relative to the detector/segmentor (``backbone.`` prefix).
        num_layers (int): the ``num_layers`` of ``paramwise_cfg``.

    Returns:
        int: layer id in ``[0, num_layers + 1]``.
    """
    if _DOWNSAMPLE.match(name):
        return 0
    match = _STAGE.match(name)
    if match:
        return int(match.group(1)) + 1
    return num_layers + 1


_LAYER_ID_RULES = {'layer_wise': get_layer_id_layer_wise, 'stage_wise': get_layer_id_stage_wise}


@register_module(OPTIM_WRAPPER_CONSTRUCTORS)
class LargeKernelLayerDecayOptimizerConstructor(DefaultOptimWrapperConstructor):
    """ConvNeXt-style learning-rate decay for SLaK and PeLK (`ConvNeXt <https://arxiv.org/abs/2201.03545>`_).

    Parameters are grouped by layer id (see :func:`get_layer_id_layer_wise` and
    :func:`get_layer_id_stage_wise`); a group with id ``i`` gets the learning rate
    ``lr * decay_rate ** (num_layers + 1 - i)``, so the heads train at the base rate and the stem at the
    smallest. Biases, 1-D parameters (norms, the layer scale ``gamma``) and parameters whose name
    contains one of ``no_decay_keys`` (positional embeddings) get no weight decay.

    Args:
        optim_wrapper_cfg (dict): as for :class:`mmengine.optim.DefaultOptimWrapperConstructor`.
        paramwise_cfg (dict): ``num_layers`` (int, required), ``decay_rate`` (float, required),
            ``decay_type`` (``'layer_wise'`` (default) or ``'stage_wise'``), ``no_decay_keys``
            (tuple of str, default ``('pos_embed',)``).

    Example:
        >>> optim_wrapper = dict(
        ...     type='OptimWrapper',
        ...     optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
        ...     constructor='LargeKernelLayerDecayOptimizerConstructor',
        ...     paramwise_cfg=dict(decay_rate=0.9, decay_type='stage_wise', num_layers=6))
    """

    def __init__(self, optim_wrapper_cfg, paramwise_cfg=None):
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        cfg = self.paramwise_cfg
        missing = [key for key in ('num_layers', 'decay_rate') if key not in cfg]
        if missing:
            raise ValueError(f'paramwise_cfg of {type(self).__name__} needs {missing}, got {cfg}')
        self.decay_type = cfg.get('decay_type', 'layer_wise')
        if self.decay_type not in _LAYER_ID_RULES:
            raise ValueError(
                f'decay_type must be one of {sorted(_LAYER_ID_RULES)}, got {self.decay_type!r}')
        self.num_layers = cfg['num_layers']
        self.decay_rate = cfg['decay_rate']
        self.no_decay_keys = tuple(cfg.get('no_decay_keys', ('pos_embed',)))

    def add_params(self, params, module, **kwargs):
        """Append one param group per (layer id, decay / no decay) pair to ``params``."""
        layer_id_of = _LAYER_ID_RULES[self.decay_type]
        groups = {}
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            no_decay = (param.ndim == 1 or name.endswith('.bias')
                        or any(key in name for key in self.no_decay_keys))
            layer_id = layer_id_of(name, self.num_layers)
            group_name = f'layer_{layer_id}_{"no_decay" if no_decay else "decay"}'
            if group_name not in groups:
                lr_scale = self.decay_rate**(self.num_layers + 1 - layer_id)
                groups[group_name] = dict(
                    params=[],
                    param_names=[],
                    group_name=group_name,
                    lr_scale=lr_scale,
                    lr=lr_scale * self.base_lr,
                    weight_decay=0. if no_decay else self.base_wd)
            groups[group_name]['params'].append(param)
            groups[group_name]['param_names'].append(name)
        summary = ', '.join(f'{key}: lr x{group["lr_scale"]:.4g} ({len(group["params"])} params)'
                            for key, group in sorted(groups.items()))
        print_log(f'{self.decay_type} lr decay {self.decay_rate}, num_layers {self.num_layers}: '
                  f'{summary}', logger='current')
        params.extend(groups.values())

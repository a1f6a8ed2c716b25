"""Layer-wise / stage-wise learning-rate decay for SLaK and PeLK backbones.

MMDetection's and MMSegmentation's ``LearningRateDecayOptimizerConstructor`` implement the ConvNeXt
recipe but refuse any backbone whose class name lacks ``'ConvNeXt'``, and they take the number of layer
ids from a hand-typed ``num_layers``. This constructor applies the same rules to any backbone that
knows its own depths, as SLaK and PeLK do (``get_layer_depth`` and ``get_stage_depth``, see
:class:`~mmslak.models.backbones.LargeKernelConvNeXt`), under a name that mmdet's and mmseg's scopes
cannot shadow. mmpretrain's stock ``LearningRateDecayOptimWrapperConstructor`` works with them too
(layer-wise only, with mmpretrain's weight-decay options).
"""
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor

from mmslak.registry import OPTIM_WRAPPER_CONSTRUCTORS, register_module

# decay_type -> the backbone method giving a parameter's (layer id, number of layer ids).
DEPTH_GETTERS = {'layer_wise': 'get_layer_depth', 'stage_wise': 'get_stage_depth'}


@register_module(OPTIM_WRAPPER_CONSTRUCTORS)
class LargeKernelLayerDecayOptimizerConstructor(DefaultOptimWrapperConstructor):
    """ConvNeXt-style learning-rate decay for SLaK and PeLK (`ConvNeXt <https://arxiv.org/abs/2201.03545>`_).

    The model's ``backbone`` gives each parameter (named relative to the model, ``backbone.`` prefix) a
    layer id and the number of ids, ``num_layers``: ``backbone.get_layer_depth`` for
    ``decay_type='layer_wise'``, ``backbone.get_stage_depth`` for ``'stage_wise'``. A group with id
    ``i`` gets the learning rate ``lr * decay_rate ** (num_layers - 1 - i)``, so the heads (the last
    id) train at the base rate and the stem at the smallest. Biases, 1-D parameters (norms, the layer
    scale ``gamma``) and parameters whose name contains one of ``no_decay_keys`` (positional
    embeddings) get no weight decay.

    Args:
        optim_wrapper_cfg (dict): as for :class:`mmengine.optim.DefaultOptimWrapperConstructor`.
        paramwise_cfg (dict): ``decay_rate`` (float, required), ``decay_type`` (``'layer_wise'``
            (default) or ``'stage_wise'``), ``no_decay_keys`` (tuple of str, default
            ``('pos_embed',)``).

    Example:
        >>> optim_wrapper = dict(
        ...     type='OptimWrapper',
        ...     optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
        ...     constructor='LargeKernelLayerDecayOptimizerConstructor',
        ...     paramwise_cfg=dict(decay_rate=0.9, decay_type='stage_wise'))
    """

    def __init__(self, optim_wrapper_cfg, paramwise_cfg=None):
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        cfg = self.paramwise_cfg
        if 'decay_rate' not in cfg:
            raise ValueError(f'paramwise_cfg of {type(self).__name__} needs decay_rate, got {cfg}')
        if 'num_layers' in cfg:
            raise ValueError(f'{type(self).__name__} reads the number of layers from the backbone '
                             f'(get_layer_depth); remove num_layers from paramwise_cfg {cfg}')
        self.decay_type = cfg.get('decay_type', 'layer_wise')
        if self.decay_type not in DEPTH_GETTERS:
            raise ValueError(
                f'decay_type must be one of {sorted(DEPTH_GETTERS)}, got {self.decay_type!r}')
        self.decay_rate = cfg['decay_rate']
        self.no_decay_keys = tuple(cfg.get('no_decay_keys', ('pos_embed',)))

    def add_params(self, params, module, **kwargs):
        """Append one param group per (layer id, decay / no decay) pair to ``params``."""
        getter = DEPTH_GETTERS[self.decay_type]
        backbone = getattr(module, 'backbone', None)
        if not hasattr(backbone, getter):
            raise TypeError(f'{self.decay_type} lr decay needs a model whose backbone has {getter} '
                            f'(SLaK, PeLK); {type(module).__name__}.backbone is '
                            f'{type(backbone).__name__}')
        depth_of = getattr(backbone, getter)
        groups = {}
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            no_decay = (param.ndim == 1 or name.endswith('.bias')
                        or any(key in name for key in self.no_decay_keys))
            layer_id, num_layers = depth_of(name, prefix='backbone.')
            group_name = f'layer_{layer_id}_{"no_decay" if no_decay else "decay"}'
            if group_name not in groups:
                lr_scale = self.decay_rate**(num_layers - 1 - layer_id)
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
        print_log(f'{self.decay_type} lr decay {self.decay_rate}: {summary}', logger='current')
        params.extend(groups.values())

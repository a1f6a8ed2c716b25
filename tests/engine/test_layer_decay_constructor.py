"""How LargeKernelLayerDecayOptimizerConstructor groups parameters (ConvNeXt's decay rules)."""
import importlib
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope, init_default_scope
from torch import nn

from mmslak.engine.optim import LargeKernelLayerDecayOptimizerConstructor
from mmslak.models import SLaK

CONFIG_DIR = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs')

BASE_LR = 1e-3
BASE_WD = 0.05


class ConvNeXtLayout(nn.Module):
    """A backbone with ConvNeXt's / SLaK's parameter names and stage depths [1, 1, 7, 1]."""

    def __init__(self, depths=(1, 1, 7, 1), width=4):
        super().__init__()
        self.downsample_layers = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(3, width, 4, 4), nn.LayerNorm(width))] +
            [nn.Sequential(nn.LayerNorm(width), nn.Conv2d(width, width, 2, 2)) for _ in range(3)])
        self.stages = nn.ModuleList(
            nn.Sequential(*[nn.Linear(width, width) for _ in range(depth)]) for depth in depths)
        # A stage-level parameter outside any block, as PeLK's shared positional embedding.
        self.stages[2].pos_embed = nn.Parameter(torch.zeros(width, 3, 3))
        self.norm3 = nn.LayerNorm(width)


class Segmentor(nn.Module):

    def __init__(self, **kwargs):
        super().__init__()
        self.backbone = ConvNeXtLayout(**kwargs)
        self.decode_head = nn.Conv2d(4, 2, 1)


def build(model, decay_type, num_layers=6, decay_rate=0.5, **paramwise):
    cfg = dict(
        type='OptimWrapper',
        optimizer=dict(type='AdamW', lr=BASE_LR, weight_decay=BASE_WD),
        constructor='LargeKernelLayerDecayOptimizerConstructor',
        paramwise_cfg=dict(
            num_layers=num_layers, decay_rate=decay_rate, decay_type=decay_type, **paramwise))
    return build_optim_wrapper(model, cfg)


def groups_by_param_name(optim_wrapper):
    return {
        name: group
        for group in optim_wrapper.optimizer.param_groups for name in group['param_names']
    }


# Hand-computed from ConvNeXt's rule with num_layers = 6 (stage 2 blocks: 3 per layer id).
LAYER_WISE_IDS = {
    'backbone.downsample_layers.0.0.weight': 0,
    'backbone.downsample_layers.0.1.bias': 0,
    'backbone.stages.0.0.weight': 1,
    'backbone.downsample_layers.1.1.weight': 2,
    'backbone.stages.1.0.weight': 2,
    'backbone.downsample_layers.2.0.weight': 3,
    'backbone.stages.2.0.weight': 3,
    'backbone.stages.2.2.bias': 3,
    'backbone.stages.2.3.weight': 4,
    'backbone.stages.2.5.weight': 4,
    'backbone.stages.2.6.weight': 5,
    'backbone.stages.2.pos_embed': 3,
    'backbone.downsample_layers.3.1.weight': 6,
    'backbone.stages.3.0.weight': 6,
    'backbone.norm3.weight': 7,
    'decode_head.weight': 7,
}

STAGE_WISE_IDS = {
    'backbone.downsample_layers.0.0.weight': 0,
    'backbone.downsample_layers.3.1.weight': 0,
    'backbone.stages.0.0.weight': 1,
    'backbone.stages.1.0.weight': 2,
    'backbone.stages.2.6.weight': 3,
    'backbone.stages.2.pos_embed': 3,
    'backbone.stages.3.0.bias': 4,
    'backbone.norm3.bias': 7,
    'decode_head.bias': 7,
}


@pytest.mark.parametrize('decay_type, expected_ids', [('layer_wise', LAYER_WISE_IDS),
                                                      ('stage_wise', STAGE_WISE_IDS)])
def test_layer_ids_and_lr_scales(decay_type, expected_ids):
    model = Segmentor()
    groups = groups_by_param_name(build(model, decay_type, num_layers=6, decay_rate=0.5))
    assert set(groups) == {name for name, _ in model.named_parameters()}
    for name, layer_id in expected_ids.items():
        group = groups[name]
        assert group['group_name'].startswith(f'layer_{layer_id}_'), name
        # num_layers + 2 = 8 lr levels; the head (id 7) keeps the base lr.
        assert group['lr'] == pytest.approx(BASE_LR * 0.5**(7 - layer_id)), name


def test_weight_decay_only_on_weights_of_two_or_more_dims():
    model = Segmentor()
    groups = groups_by_param_name(build(model, 'layer_wise'))
    expected_wd = {
        'backbone.downsample_layers.0.0.weight': BASE_WD,  # conv kernel
        'backbone.downsample_layers.0.0.bias': 0.,
        'backbone.downsample_layers.0.1.weight': 0.,  # LayerNorm
        'backbone.stages.2.4.weight': BASE_WD,
        'backbone.stages.2.pos_embed': 0.,  # 3-D, excluded by name
        'backbone.norm3.weight': 0.,
        'decode_head.weight': BASE_WD,
        'decode_head.bias': 0.,
    }
    for name, weight_decay in expected_wd.items():
        assert groups[name]['weight_decay'] == weight_decay, name
        assert groups[name]['group_name'].endswith('_decay' if weight_decay else '_no_decay')


def test_each_parameter_in_exactly_one_group_and_frozen_ones_left_out():
    model = Segmentor()
    model.backbone.downsample_layers[0].requires_grad_(False)
    optimizer = build(model, 'layer_wise').optimizer
    grouped = [id(p) for group in optimizer.param_groups for p in group['params']]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert len(grouped) == len(set(grouped))
    assert set(grouped) == set(trainable)


def test_num_layers_too_small_for_stage_2_depth():
    # Stage 2 with 7 blocks reaches layer id 5, so num_layers must be >= 6.
    with pytest.raises(ValueError, match='num_layers=5 is too small'):
        build(Segmentor(), 'layer_wise', num_layers=5)


@pytest.mark.parametrize('paramwise_cfg, message', [
    (dict(num_layers=6, decay_rate=0.9, decay_type='block_wise'), 'decay_type must be one of'),
    (dict(decay_rate=0.9), r"needs \['num_layers'\]"),
])
def test_bad_paramwise_cfg(paramwise_cfg, message):
    with pytest.raises(ValueError, match=message):
        LargeKernelLayerDecayOptimizerConstructor(
            dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=BASE_LR)), paramwise_cfg)


def test_slak_upernet_config_groups_by_stage():
    """The optim_wrapper of the SLaK-T UperNet config on a real (small) SLaK: stage-wise decay 0.9."""
    cfg = Config.fromfile(osp.join(CONFIG_DIR, 'slak', 'upernet_slak-t_4xb4-160k_ade20k-512x512.py'))
    init_default_scope(cfg.default_scope)  # built the way the Runner builds it inside mmseg's scope

    class Segmentor(nn.Module):

        def __init__(self):
            super().__init__()
            self.backbone = SLaK(arch=dict(depths=[1, 1, 2, 1], widths=[8, 16, 24, 32]),
                                 kernel_size=(7, 7, 5, 5), out_indices=(0, 1, 2, 3))
            self.decode_head = nn.Conv2d(4, 2, 1)

    model = Segmentor()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    base_lr, base_wd = cfg.optim_wrapper.optimizer.lr, cfg.optim_wrapper.optimizer.weight_decay
    groups = groups_by_param_name(optim_wrapper)
    num_layers = cfg.optim_wrapper.paramwise_cfg.num_layers
    for name, param in model.named_parameters():
        if name.startswith('backbone.downsample_layers.'):
            layer_id = 0
        elif name.startswith('backbone.stages.'):
            layer_id = int(name.split('.')[2]) + 1
        else:  # the backbone's output norms and the head
            layer_id = num_layers + 1
        assert groups[name]['lr'] == pytest.approx(base_lr * 0.9**(num_layers + 1 - layer_id)), name
        no_decay = param.ndim == 1  # biases, LayerNorm / BatchNorm parameters, the layer scale gamma
        assert groups[name]['weight_decay'] == (0. if no_decay else base_wd), name
    assert groups['backbone.stages.2.1.large_kernel.LoRA1.conv.weight']['weight_decay'] == base_wd
    assert groups['backbone.stages.2.1.gamma']['weight_decay'] == 0.


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_registered_in_mmdet_and_mmseg_scopes(scope):
    registry = importlib.import_module(f'{scope}.registry').OPTIM_WRAPPER_CONSTRUCTORS
    with DefaultScope.overwrite_default_scope(scope):
        assert registry.get('LargeKernelLayerDecayOptimizerConstructor') is \
            LargeKernelLayerDecayOptimizerConstructor

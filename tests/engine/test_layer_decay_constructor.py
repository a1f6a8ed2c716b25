"""Layer depths of SLaK / PeLK and how the layer-decay constructors group their parameters.

The backbones own their depth (``get_layer_depth`` / ``get_stage_depth``, ConvNeXt's rules), so
mmpretrain's stock ``LearningRateDecayOptimWrapperConstructor`` and our
``LargeKernelLayerDecayOptimizerConstructor`` need no hand-typed ``num_layers``.
"""
import glob
import importlib
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope, init_default_scope
from torch import nn

from mmslak.engine.optim import LargeKernelLayerDecayOptimizerConstructor
from mmslak.models import PeLK, SLaK

CONFIG_DIR = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs')

BASE_LR = 1e-3
BASE_WD = 0.05
# Stage 2 with 7 blocks: layer ids 3, 3, 3, 4, 4, 4, 5; the last backbone id is 4 + (7 - 1) // 3 = 6.
DEPTHS = [1, 1, 7, 1]


# A PeLK with tiny widths: ConvNeXt's parameter layout plus a stage-level shared embedding.
SMALL_PELK = dict(arch=dict(depths=DEPTHS, widths=[8, 8, 8, 8]), kernel_size=(7, 7, 7, 7), width_factor=1.,
                  out_indices=(3, ))


def small_pelk():
    return PeLK(**SMALL_PELK)


class Segmentor(nn.Module):

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.decode_head = nn.Conv2d(4, 2, 1)


def build(model, decay_type, decay_rate=0.5, **paramwise):
    cfg = dict(
        type='OptimWrapper',
        optimizer=dict(type='AdamW', lr=BASE_LR, weight_decay=BASE_WD),
        constructor='LargeKernelLayerDecayOptimizerConstructor',
        paramwise_cfg=dict(decay_rate=decay_rate, decay_type=decay_type, **paramwise))
    return build_optim_wrapper(model, cfg)


def groups_by_param_name(optim_wrapper):
    return {
        name: group
        for group in optim_wrapper.optimizer.param_groups for name in group['param_names']
    }


# Hand-computed from ConvNeXt's rule (the official code's num_layers = 6 for this stage-2 depth).
LAYER_WISE_IDS = {
    'backbone.downsample_layers.0.0.weight': 0,
    'backbone.downsample_layers.0.1.bias': 0,
    'backbone.stages.0.0.pwconv1.weight': 1,
    'backbone.downsample_layers.1.1.weight': 2,
    'backbone.stages.1.0.gamma': 2,
    'backbone.downsample_layers.2.0.weight': 3,
    'backbone.stages.2.0.large_kernel.weight': 3,
    'backbone.stages.2.2.pwconv2.bias': 3,
    'backbone.stages.2.3.pwconv1.weight': 4,
    'backbone.stages.2.5.norm.weight': 4,
    'backbone.stages.2.6.pwconv1.weight': 5,
    'backbone.stages.2.shared.pos_embed': 3,  # shared by the stage's blocks: its first block's id
    'backbone.downsample_layers.3.1.weight': 6,
    'backbone.stages.3.0.pwconv2.weight': 6,
    'backbone.norm3.weight': 7,
    'decode_head.weight': 7,
}

STAGE_WISE_IDS = {
    'backbone.downsample_layers.0.0.weight': 0,
    'backbone.downsample_layers.3.1.weight': 0,
    'backbone.stages.0.0.pwconv1.weight': 1,
    'backbone.stages.1.0.pwconv1.weight': 2,
    'backbone.stages.2.6.pwconv1.weight': 3,
    'backbone.stages.2.shared.pos_embed': 3,
    'backbone.stages.3.0.pwconv1.bias': 4,
    'backbone.norm3.bias': 7,
    'decode_head.bias': 7,
}


@pytest.mark.parametrize('method, expected_ids', [('get_layer_depth', LAYER_WISE_IDS),
                                                  ('get_stage_depth', STAGE_WISE_IDS)])
def test_backbone_depths(method, expected_ids):
    backbone = small_pelk()
    for name, layer_id in expected_ids.items():
        # 8 layer ids: 0..6 in the backbone, 7 for the output norms and the heads.
        assert getattr(backbone, method)(name, prefix='backbone.') == (layer_id, 8), name
    # Without a prefix the names are the backbone's own.
    assert backbone.get_layer_depth('stages.2.3.pwconv1.weight') == (4, 8)


@pytest.mark.parametrize('backbone_cls', [SLaK, PeLK])
@pytest.mark.parametrize('arch', ['tiny', 'small', 'base'])
def test_layer_depth_is_mmpretrain_convnext_rule(backbone_cls, arch):
    """Every block parameter of the named archs gets mmpretrain's ConvNeXt id (its last id: 6 or 12)."""
    from mmpretrain.models import ConvNeXt
    with torch.device('meta'):
        backbone = backbone_cls(arch=arch)
    # mmpretrain's ConvNeXt with the same depths (narrow: its rule reads only the depths).
    convnext = ConvNeXt(arch=dict(depths=backbone.depths, channels=[4, 4, 4, 4]))
    names = [name for name, _ in backbone.named_parameters() if '.shared.' not in name]
    assert len(names) > 100
    for name in names:
        assert backbone.get_layer_depth(name, 'backbone.') == convnext.get_layer_depth(name, 'backbone.')
        assert backbone.get_layer_depth(name) == convnext.get_layer_depth(name), name


def test_mmpretrain_stock_constructor_uses_the_backbone_depth():
    """mmpretrain's LearningRateDecayOptimWrapperConstructor, unchanged, on an ImageClassifier with PeLK."""
    from mmpretrain.models import ImageClassifier
    # built in mmpretrain's scope whatever scope earlier tests left, as mmpretrain's Runner builds it
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = ImageClassifier(backbone=dict(type='PeLK', **SMALL_PELK),
                                head=dict(type='LinearClsHead', num_classes=3, in_channels=8))
        optim_wrapper = build_optim_wrapper(
            model,
            dict(optimizer=dict(type='AdamW', lr=BASE_LR, weight_decay=BASE_WD),
                 constructor='LearningRateDecayOptimWrapperConstructor',
                 paramwise_cfg=dict(layer_decay_rate=0.5)))
    lrs = {group['param_name']: group['lr'] for group in optim_wrapper.optimizer.param_groups}
    assert set(lrs) == {name for name, _ in model.named_parameters()}
    expected_ids = dict(LAYER_WISE_IDS, **{'head.fc.weight': 7})
    del expected_ids['decode_head.weight']
    for name, layer_id in expected_ids.items():
        assert lrs[name] == pytest.approx(BASE_LR * 0.5**(7 - layer_id)), name
    # Our constructor gives every parameter the same learning rate.
    ours = groups_by_param_name(build(model, 'layer_wise', decay_rate=0.5))
    for name, lr in lrs.items():
        assert ours[name]['lr'] == pytest.approx(lr), name


@pytest.mark.parametrize('decay_type, expected_ids', [('layer_wise', LAYER_WISE_IDS),
                                                      ('stage_wise', STAGE_WISE_IDS)])
def test_layer_ids_and_lr_scales(decay_type, expected_ids):
    model = Segmentor(small_pelk())
    groups = groups_by_param_name(build(model, decay_type, decay_rate=0.5))
    assert set(groups) == {name for name, _ in model.named_parameters()}
    for name, layer_id in expected_ids.items():
        group = groups[name]
        assert group['group_name'].startswith(f'layer_{layer_id}_'), name
        # 8 lr levels; the head (id 7) keeps the base lr.
        assert group['lr'] == pytest.approx(BASE_LR * 0.5**(7 - layer_id)), name


def test_weight_decay_only_on_weights_of_two_or_more_dims():
    model = Segmentor(small_pelk())
    groups = groups_by_param_name(build(model, 'layer_wise'))
    expected_wd = {
        'backbone.downsample_layers.0.0.weight': BASE_WD,  # conv kernel
        'backbone.downsample_layers.0.0.bias': 0.,
        'backbone.downsample_layers.0.1.weight': 0.,  # LayerNorm
        'backbone.stages.2.4.pwconv1.weight': BASE_WD,
        'backbone.stages.2.4.gamma': 0.,  # layer scale
        'backbone.stages.2.shared.pos_embed': 0.,  # 3-D, excluded by name
        'backbone.norm3.weight': 0.,
        'decode_head.weight': BASE_WD,
        'decode_head.bias': 0.,
    }
    for name, weight_decay in expected_wd.items():
        assert groups[name]['weight_decay'] == weight_decay, name
        assert groups[name]['group_name'].endswith('_decay' if weight_decay else '_no_decay')


def test_each_parameter_in_exactly_one_group_and_frozen_ones_left_out():
    model = Segmentor(small_pelk())
    model.backbone.downsample_layers[0].requires_grad_(False)
    optimizer = build(model, 'layer_wise').optimizer
    grouped = [id(p) for group in optimizer.param_groups for p in group['params']]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert len(grouped) == len(set(grouped))
    assert set(grouped) == set(trainable)


@pytest.mark.parametrize('paramwise_cfg, message', [
    (dict(decay_rate=0.9, decay_type='block_wise'), 'decay_type must be one of'),
    (dict(decay_type='layer_wise'), 'needs decay_rate'),
    (dict(decay_rate=0.9, num_layers=6), 'remove num_layers'),
])
def test_bad_paramwise_cfg(paramwise_cfg, message):
    with pytest.raises(ValueError, match=message):
        LargeKernelLayerDecayOptimizerConstructor(
            dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=BASE_LR)), paramwise_cfg)


def test_backbone_without_depth_is_refused():
    model = Segmentor(nn.Conv2d(3, 4, 1))
    with pytest.raises(TypeError, match='backbone has get_layer_depth'):
        build(model, 'layer_wise')


# The official recipes: SLaK-T detection (layer-wise 0.7, num_layers 6), SLaK-S detection (num_layers 12),
# SLaK-S segmentation (stage-wise 0.9, num_layers 12). (config, arch, decay, stem's lr scale as the
# official num_layers gives it: decay ** (num_layers + 1)).
OFFICIAL = [
    ('slak/cascade-mask-rcnn_slak-t_fpn_giou-4conv1f_ms-3x_coco.py', 'tiny', 0.7**7),
    ('slak/cascade-mask-rcnn_slak-s_fpn_giou-4conv1f_ms-3x_coco.py', 'small', 0.7**13),
    ('pelk/faster-rcnn_pelk-t_fpn_1x_voc0712.py', 'tiny', 0.7**7),
    ('slak/upernet_slak-t_4xb4-160k_ade20k-512x512.py', 'tiny', 0.9**7),
    ('pelk/upernet_pelk-b_4xb4-160k_ade20k-512x512.py', 'base', 0.9**13),
]


@pytest.mark.parametrize('config, arch, stem_scale', OFFICIAL)
def test_configs_reproduce_the_official_num_layers(config, arch, stem_scale):
    cfg = Config.fromfile(osp.join(CONFIG_DIR, config))
    init_default_scope(cfg.default_scope)  # built the way the Runner builds it, inside mmdet's / mmseg's scope
    backbone_cls = {'SLaK': SLaK, 'PeLK': PeLK}[cfg.model.backbone.type]
    with torch.device('meta'):
        model = Segmentor(backbone_cls(arch=arch))
    groups = groups_by_param_name(build_optim_wrapper(model, cfg.optim_wrapper))
    base_lr = cfg.optim_wrapper.optimizer.lr
    assert groups['backbone.downsample_layers.0.0.weight']['lr'] == pytest.approx(base_lr * stem_scale)
    assert groups['decode_head.weight']['lr'] == pytest.approx(base_lr)
    assert groups['backbone.stages.2.0.gamma']['weight_decay'] == 0.


def test_no_config_types_num_layers():
    configs = glob.glob(osp.join(CONFIG_DIR, '**', '*.py'), recursive=True)
    assert configs
    for path in configs:
        with open(path) as f:
            assert 'num_layers' not in f.read(), path


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_registered_in_mmdet_and_mmseg_scopes(scope):
    registry = importlib.import_module(f'{scope}.registry').OPTIM_WRAPPER_CONSTRUCTORS
    with DefaultScope.overwrite_default_scope(scope):
        assert registry.get('LargeKernelLayerDecayOptimizerConstructor') is \
            LargeKernelLayerDecayOptimizerConstructor

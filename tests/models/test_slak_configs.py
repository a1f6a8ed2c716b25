"""The SLaK ImageNet configs: exact classifier sizes, the official recipe, and a full-size SLaK-T."""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from slak_reference import official_forward, relative_error

from mmslak.models import convert_slak_state_dict, switch_to_deploy

CONFIGS = Path(__file__).resolve().parents[2] / 'configs' / 'slak'


def build(arch, device=None):
    cfg = Config.fromfile(CONFIGS / f'slak-{arch}_in1k.py')
    init_default_scope(cfg.default_scope)
    with torch.device(device or 'cpu'):
        return cfg, MODELS.build(cfg.model)


@pytest.mark.parametrize('arch, expected', [('tiny', 50_703_838), ('small', 91_131_820),
                                            ('base', 157_950_792)])
def test_dense_parameter_counts(arch, expected):
    _, model = build(arch, 'meta')
    assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize('arch, drop_path, interval, prune_rate', [('tiny', 0.1, 2000, 0.5),
                                                                   ('small', 0.4, 100, 0.3),
                                                                   ('base', 0.5, 100, 0.3)])
def test_official_recipe(arch, drop_path, interval, prune_rate):
    cfg = Config.fromfile(CONFIGS / f'slak-{arch}_in1k.py')
    assert cfg.model.backbone.drop_path_rate == drop_path
    assert cfg.model.backbone.layer_scale_init_value == 1e-6
    assert cfg.optim_wrapper.optimizer.type == 'AdamW' and cfg.optim_wrapper.optimizer.lr == 4e-3
    assert cfg.optim_wrapper.optimizer.weight_decay == 0.05
    assert cfg.auto_scale_lr.base_batch_size == 4096 and cfg.train_cfg.max_epochs == 300
    warmup, cosine = cfg.param_scheduler
    assert warmup.end == 20 and cosine.begin == 20 and cosine.eta_min == 1e-6
    ema, sparse = cfg.custom_hooks
    assert ema.type == 'EMAHook' and ema.momentum == 1e-4
    assert sparse.type == 'SparseTrainingHook' and sparse.sparsity == 0.4 and sparse.init == 'snip'
    assert sparse.update_interval == interval and sparse.prune_rate == prune_rate


def test_full_size_tiny_deploy_matches_official_forward():
    """SLaK-T as configured, with random official-layout weights: unmerged and merged vs the reference."""
    _, model = build('tiny')
    model.eval()
    generator = torch.Generator().manual_seed(0)
    official = {}
    for key, value in model.state_dict().items():
        name = key.replace('backbone.norm3.', 'norm.').replace('backbone.', '').replace('head.fc.', 'head.')
        if value.dtype == torch.int64:
            official[name] = value
        elif 'running_var' in name or name.endswith(('bn.weight', 'norm.weight', '.gamma')):
            official[name] = torch.rand(value.shape, generator=generator) + 0.5
        else:
            fan_in = value[0].numel() if value.dim() > 1 else 10
            official[name] = torch.randn(value.shape, generator=generator) * fan_in**-0.5
    model.load_state_dict(convert_slak_state_dict(official), strict=True)
    image = torch.randn(1, 3, 96, 96, generator=generator)
    expected = official_forward(official, image)
    assert relative_error(model(image, mode='tensor'), expected) < 1e-4
    switch_to_deploy(model)
    assert model.backbone.deploy
    assert relative_error(model(image, mode='tensor'), expected) < 1e-4

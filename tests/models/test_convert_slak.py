"""Official SLaK checkpoints -> mmslak: conversion, validation, the CLI, and logits equality."""
import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from slak_reference import official_forward, official_state_dict, relative_error

from mmslak.models import (SLaK, check_slak_state_dict, convert_slak_state_dict,
                           slak_state_dict_from_checkpoint)

REPO = Path(__file__).resolve().parents[2]
CONVERTER = REPO / 'tools' / 'model_converters' / 'slak2mmslak.py'
DEPTHS, WIDTHS, KERNELS, NUM_CLASSES = [1, 2, 1, 1], [8, 16, 24, 32], (13, 11, 9, 7), 10
ARCH = dict(arch=dict(depths=DEPTHS, widths=WIDTHS), kernel_size=KERNELS, width_factor=1.0)


def load_converter():
    spec = importlib.util.spec_from_file_location('slak2mmslak', CONVERTER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def official(seed=0, **kwargs):
    return official_state_dict(DEPTHS, WIDTHS, KERNELS, num_classes=NUM_CLASSES, seed=seed, **kwargs)


def official_checkpoint(path, with_ema=True, **kwargs):
    """A file laid out like the release: model, model_ema, optimizer, epoch, scaler and argparse args."""
    checkpoint = dict(
        model=official(**kwargs),
        optimizer=dict(state={}, param_groups=[dict(lr=4e-3, params=[0])]),
        epoch=299,
        scaler=dict(scale=65536.0),
        args=argparse.Namespace(model='SLaK_tiny', kernel_size=[51, 49, 47, 13, 5], Decom=True,
                                width_factor=1.3))
    if with_ema:
        checkpoint['model_ema'] = official(seed=1, **kwargs)
    torch.save(checkpoint, path)
    return checkpoint


@pytest.fixture
def image():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))


def test_conversion_names_and_idempotence():
    sd = official(old_names=True)
    converted = convert_slak_state_dict(sd)
    assert 'backbone.stages.1.1.large_kernel.LoRA2.bn.running_var' in converted
    assert 'backbone.norm3.weight' in converted and 'head.fc.bias' in converted
    assert not any('Decom' in k for k in converted)
    assert len(converted) == len(sd)
    again = convert_slak_state_dict(converted)
    assert list(again) == list(converted)
    assert all(again[k] is converted[k] for k in converted)
    assert list(convert_slak_state_dict(official())) == list(converted)


def test_check_infers_the_architecture():
    config = check_slak_state_dict(convert_slak_state_dict(official()))
    assert config['arch'] == dict(depths=DEPTHS, widths=WIDTHS)
    assert config['kernel_size'] == KERNELS and config['short_kernel'] == 5
    assert config['decompose'] and config['branch_bn'] and not config['deploy']
    assert config['num_classes'] == NUM_CLASSES and config['out_indices'] == [3]
    undecomposed = check_slak_state_dict(convert_slak_state_dict(official(decompose=False)))
    assert not undecomposed['decompose'] and undecomposed['kernel_size'] == KERNELS


def test_check_lists_unknown_missing_and_misshapen_keys():
    sd = convert_slak_state_dict(official())
    del sd['backbone.stages.1.1.pwconv2.bias']
    sd['backbone.stages.0.0.large_kernel.LoRA3.conv.weight'] = torch.zeros(8, 1, 3, 3)
    sd['extra.step'] = torch.zeros(())
    sd['backbone.stages.2.0.gamma'] = torch.zeros(25)
    with pytest.raises(ValueError) as error:
        check_slak_state_dict(sd)
    message = str(error.value)
    assert 'missing keys (1): backbone.stages.1.1.pwconv2.bias' in message
    assert ('unknown keys (2): backbone.stages.0.0.large_kernel.LoRA3.conv.weight, extra.step' in message)
    assert 'backbone.stages.2.0.gamma (25,) (expected (24,))' in message


def test_converted_checkpoint_reproduces_official_logits(tmp_path, image):
    from mmengine.registry import DefaultScope
    from mmengine.runner import load_checkpoint
    from mmpretrain.registry import MODELS

    checkpoint = official_checkpoint(tmp_path / 'official.pth')
    load_converter().main([str(tmp_path / 'official.pth'), str(tmp_path / 'converted.pth'), '--ema'])
    # In mmpretrain's scope, as its configs build it (the classifier's default data preprocessor is
    # mmpretrain's), whatever scope an earlier test left behind.
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        classifier = MODELS.build(
            dict(
                type='ImageClassifier',
                backbone=dict(type='SLaK', **ARCH),
                head=dict(type='LinearClsHead', num_classes=NUM_CLASSES, in_channels=WIDTHS[-1]))).eval()
    load_checkpoint(classifier, str(tmp_path / 'converted.pth'), strict=True)
    logits = classifier(image, mode='tensor')
    expected = official_forward(checkpoint['model_ema'], image)
    assert relative_error(logits, expected) < 1e-4
    # The non-EMA weights give different logits: --ema really selected model_ema.
    assert relative_error(logits, official_forward(checkpoint['model'], image)) > 1e-2


def test_backbone_part_initialises_dense_prediction_backbones(tmp_path, image):
    checkpoint = official_checkpoint(tmp_path / 'official.pth', with_ema=False, old_names=True)
    load_converter().convert(str(tmp_path / 'official.pth'), str(tmp_path / 'converted.pth'))
    backbone = SLaK(**ARCH, out_indices=(0, 1, 2, 3), gap_before_final_norm=False,
                    init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'converted.pth'),
                                  prefix='backbone.'))
    backbone.init_weights()
    state = backbone.state_dict()
    for key, value in checkpoint['model'].items():
        if key.startswith(('downsample_layers.', 'stages.')):
            torch.testing.assert_close(state[key.replace('Decom', 'LoRA')], value, rtol=0, atol=0)
    torch.testing.assert_close(state['norm3.weight'], checkpoint['model']['norm.weight'], rtol=0, atol=0)


def test_downstream_checkpoint_keeps_only_the_backbone():
    sd = official(old_names=True)
    downstream = {f'backbone.{k}': v for k, v in sd.items() if not k.startswith(('norm.', 'head.'))}
    for i in range(4):
        downstream[f'backbone.norm{i}.weight'] = torch.ones(WIDTHS[i])
        downstream[f'backbone.norm{i}.bias'] = torch.zeros(WIDTHS[i])
    downstream['decode_head.conv_seg.weight'] = torch.zeros(150, 512, 1, 1)
    downstream['auxiliary_head.conv_seg.bias'] = torch.zeros(150)
    converted, dropped = slak_state_dict_from_checkpoint(dict(meta={}, state_dict=downstream))
    assert dropped == ['decode_head.conv_seg.weight', 'auxiliary_head.conv_seg.bias']
    config = check_slak_state_dict(converted)
    assert config['out_indices'] == [0, 1, 2, 3] and 'num_classes' not in config
    model = SLaK(**ARCH, out_indices=(0, 1, 2, 3), gap_before_final_norm=False)
    model.load_state_dict({k[len('backbone.'):]: v for k, v in converted.items()}, strict=True)


def test_deploy_checkpoints_are_recognised(tmp_path):
    model = SLaK(**ARCH).eval()
    model.switch_to_deploy()
    converted = convert_slak_state_dict({f'backbone.{k}': v for k, v in model.state_dict().items()})
    config = check_slak_state_dict(converted)
    assert config['deploy'] and config['decompose']


def test_cli_refuses_bad_files_and_lists_keys(tmp_path):
    checkpoint = official_checkpoint(tmp_path / 'official.pth', with_ema=False)
    del checkpoint['model']['stages.0.0.gamma']
    checkpoint['model']['stages.0.0.large_kernel.mask'] = torch.ones(1)
    torch.save(checkpoint, tmp_path / 'broken.pth')
    command = [sys.executable, str(CONVERTER), str(tmp_path / 'broken.pth'), str(tmp_path / 'out.pth')]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert result.returncode != 0
    assert 'missing keys (1): backbone.stages.0.0.gamma' in result.stderr
    assert 'unknown keys (1): backbone.stages.0.0.large_kernel.mask' in result.stderr
    assert not (tmp_path / 'out.pth').exists()

    with pytest.raises(SystemExit, match='no model_ema'):
        load_converter().main([str(tmp_path / 'official.pth'), str(tmp_path / 'out.pth'), '--ema'])


def test_loading_is_weights_only(tmp_path):
    unsafe = dict(model=official(), args=argparse.Namespace(x=1), hook=Path('/tmp'))
    torch.save(unsafe, tmp_path / 'unsafe.pth')
    with pytest.raises(SystemExit, match='PosixPath'):
        load_converter().main([str(tmp_path / 'unsafe.pth'), str(tmp_path / 'out.pth')])

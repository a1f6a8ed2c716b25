"""Every downstream config loads, has channel counts matching its backbone, and runs one forward pass.

Full-size backbones (SLaK-B has 158M parameters and 47-101 kernels) are too slow to build and run for
~30 configs, so each config is checked twice:

* its real backbone is built on the meta device (no memory, no initialisation) and the neck / head
  input channels are compared with the backbone's stage widths;
* the model is then built with the backbone arch replaced by a tiny one (and the neck / head input
  channels replaced by that arch's widths), without pretrained weights, and run on one 64x64 image.
"""
import glob
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import MODELS, init_default_scope
from mmengine.structures import PixelData

import mmslak  # noqa: F401

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# The detection and segmentation configs (configs/slak and configs/pelk also hold classifiers).
CONFIGS = sorted(
    path for directory in ('slak', 'pelk', 'toy') for algorithm in ('upernet', 'faster-rcnn', 'cascade-mask-rcnn')
    for path in glob.glob(osp.join(ROOT, 'configs', directory, f'{algorithm}_*.py')))
TINY_ARCH = dict(depths=[1, 1, 1, 1], widths=[8, 16, 24, 32])
# Kernels above PeLK's dense_max_kernel (13) in the first stage, so its peripheral grid is exercised.
TINY_KERNELS = (17, 11, 7, 5)
IMAGE_SIZE = 64


def config_id(path):
    return osp.relpath(path, osp.join(ROOT, 'configs'))


def input_channel_settings(model_cfg):
    """(config dict, key, stage index or None) for every setting that must equal backbone widths."""
    if 'neck' in model_cfg:
        return [(model_cfg.neck, 'in_channels', None)]
    settings = [(model_cfg.decode_head, 'in_channels', None)]
    if 'auxiliary_head' in model_cfg:
        aux = model_cfg.auxiliary_head
        settings.append((aux, 'in_channels', aux.in_index))
    return settings


def check_channels(model_cfg, widths):
    for node, key, stage in input_channel_settings(model_cfg):
        expected = list(widths) if stage is None else widths[stage]
        actual = list(node[key]) if stage is None else node[key]
        assert actual == expected, f'{key} {actual} does not match the backbone widths {widths}'


def set_channels(model_cfg, widths):
    for node, key, stage in input_channel_settings(model_cfg):
        node[key] = list(widths) if stage is None else widths[stage]


def build_on_meta_device(backbone_cfg):
    # Resolve the class first: the registry imports its scope's modules on first use, which must not
    # happen under the meta device.
    backbone_cls = MODELS.get(backbone_cfg.type)
    with torch.device('meta'):
        return backbone_cls(**{key: value for key, value in backbone_cfg.items() if key != 'type'})


def fake_batch(task):
    image = torch.randint(0, 256, (3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8)
    shape = (IMAGE_SIZE, IMAGE_SIZE)
    meta = dict(img_shape=shape, ori_shape=shape, pad_shape=shape, scale_factor=(1., 1.))
    if task == 'mmseg':
        from mmseg.structures import SegDataSample
        sample = SegDataSample(metainfo=meta)
        sample.gt_sem_seg = PixelData(data=torch.zeros(1, *shape, dtype=torch.long))
    else:
        from mmdet.structures import DetDataSample
        sample = DetDataSample(metainfo=meta)
    return dict(inputs=[image], data_samples=[sample])


@pytest.mark.parametrize('config', CONFIGS, ids=config_id)
def test_config(config):
    is_toy = osp.basename(osp.dirname(config)) == 'toy'
    if not is_toy:
        with open(config) as f:
            header = f.read().split('_base_')[0]
        assert 'Reported' in header, 'the header comment states the result the paper reports (or that none is)'

    cfg = Config.fromfile(config)
    assert cfg.custom_imports == dict(imports=['mmslak'], allow_failed_imports=False)
    init_default_scope(cfg.default_scope)
    backbone_cfg = cfg.model.backbone
    assert backbone_cfg.type in ('SLaK', 'PeLK')
    assert list(backbone_cfg.out_indices) == [0, 1, 2, 3]
    if is_toy:
        assert backbone_cfg.init_cfg is None
    else:
        init_cfg = backbone_cfg.init_cfg
        assert init_cfg.type == 'Pretrained' and init_cfg.prefix == 'backbone.'
        assert init_cfg.checkpoint.startswith('checkpoints/') and backbone_cfg.type.lower() in init_cfg.checkpoint

    check_channels(cfg.model, build_on_meta_device(backbone_cfg).widths)

    backbone_cfg.update(arch=TINY_ARCH, kernel_size=TINY_KERNELS, init_cfg=None)
    set_channels(cfg.model, build_on_meta_device(backbone_cfg).widths)
    # SyncBN runs on GPUs only; the Runner reverts it to BatchNorm when not distributed, and so do we.
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    model.init_weights()
    model.eval()
    with torch.no_grad():
        [result] = model.test_step(fake_batch(cfg.default_scope))
    if cfg.default_scope == 'mmseg':
        num_classes = cfg.model.decode_head.num_classes
        assert result.seg_logits.data.shape == (num_classes, IMAGE_SIZE, IMAGE_SIZE)
        assert result.pred_sem_seg.data.shape == (1, IMAGE_SIZE, IMAGE_SIZE)
    else:
        predictions = result.pred_instances
        assert predictions.bboxes.shape[1:] == (4, )
        assert len(predictions.scores) == len(predictions.labels) == len(predictions.bboxes)
        if 'mask_head' in cfg.model.roi_head:
            assert predictions.masks.shape[1:] == (IMAGE_SIZE, IMAGE_SIZE)


@pytest.mark.parametrize('config', [path for path in CONFIGS if f'{osp.sep}toy{osp.sep}' not in path],
                         ids=config_id)
def test_paper_configs_keep_sparse_zeros(config):
    """The paper configs keep a sparse checkpoint's zeros (SparseFinetuneHook), buildable in their scope."""
    from mmengine.registry import HOOKS
    cfg = Config.fromfile(config)
    hooks = cfg.get('custom_hooks', [])
    assert [hook['type'] for hook in hooks] == ['SparseFinetuneHook']
    init_default_scope(cfg.default_scope)
    assert all(type(HOOKS.build(hook)).__name__ == hook['type'] for hook in hooks)


def base_files(path):
    """Every config file that ``path`` inherits, directly or not (the stock ``scope::`` bases left out)."""
    cfg_dir = osp.dirname(path)
    with open(path) as f:
        text = f.read()
    found = []
    for statement in re.findall(r'^_base_ = (\[.*?\]|\'[^\']*\')', text, flags=re.M | re.S):
        for base in re.findall(r"'([^']+)'", statement):
            if '::' not in base:
                base = osp.normpath(osp.join(cfg_dir, base))
                found += [base, *base_files(base)]
    return found


ALL_CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True))


@pytest.mark.parametrize('config', [path for path in ALL_CONFIGS if f'{osp.sep}pelk{osp.sep}' in path],
                         ids=config_id)
def test_pelk_configs_inherit_no_slak_config(config):
    bases = base_files(config)
    if not config.endswith('_in1k.py'):  # the classifiers define their backbone, the others take a base
        assert any(osp.basename(base).startswith('pelk-') for base in bases), 'a PeLK backbone base'
    assert not [base for base in bases if f'{osp.sep}slak{osp.sep}' in base or 'slak-' in osp.basename(base)]


def test_model_bases_hold_no_hooks_and_configs_no_unused_checkpoint_variable():
    """Hooks belong to recipes (SparseFinetuneHook: configs/_base_/sparse-finetune_runtime.py), not to
    the backbone bases; the checkpoint of a backbone is in its init_cfg, not in a loose variable."""
    for path in ALL_CONFIGS:
        with open(path) as f:
            text = f.read()
        assert 'checkpoint_file' not in text, path
        if f'{osp.sep}_base_{osp.sep}models{osp.sep}' in path:
            assert 'custom_hooks' not in text, path

"""demo/image_demo.py on a toy image of each task: the config's scope picks the inferencer, the picture is written.

The toy images come from tools/dataset_converters/make_toy_data.py (a small run into a temporary
folder). What is drawn is checked against properties of the drawing itself: an overlay of opacity 0
leaves the image unchanged while 0.5 changes it, a detection threshold of 1 draws nothing while 0 draws
boxes, and the top-5 text covers the top-left corner only.
"""
import importlib.util
import subprocess
import sys
from pathlib import Path

import mmcv
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SEGMENTOR = 'configs/toy/upernet_slak-toy_1xb8-1000iter_toy-ade-128x128.py'
DETECTOR = 'configs/toy/cascade-mask-rcnn_pelk-toy_fpn_1xb4-8e_toy-coco.py'
CLASSIFIER = 'configs/slak/slak-tiny_in1k.py'


def load_demo():
    spec = importlib.util.spec_from_file_location('image_demo', REPO / 'demo' / 'image_demo.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def toy_images(tmp_path_factory):
    root = tmp_path_factory.mktemp('toy')
    subprocess.run([sys.executable, str(REPO / 'tools' / 'dataset_converters' / 'make_toy_data.py'), '--out',
                    str(root), '--num-train', '1', '--num-val', '1'], check=True, capture_output=True)
    images = {
        'ade': sorted((root / 'ade').rglob('validation/*.jpg')),
        'voc': sorted((root / 'voc').rglob('JPEGImages/*.jpg')),
        'coco': sorted((root / 'coco').rglob('val*/*.jpg')),
    }
    assert all(images.values()), images
    return {name: str(found[0]) for name, found in images.items()}


def run_demo(image, config, out, *options):
    return load_demo().main([image, str(REPO / config), *map(str, options), '--out-file', str(out)])


@pytest.mark.slow
def test_segmentation_overlay(tmp_path, toy_images):
    image = mmcv.imread(toy_images['ade'])
    with pytest.warns(UserWarning, match='random'):
        assert run_demo(toy_images['ade'], SEGMENTOR, tmp_path / 'seg.png', '--opacity', '0.5') == 0
    drawn = mmcv.imread(str(tmp_path / 'seg.png'))
    assert drawn.shape == image.shape
    assert np.abs(drawn.astype(int) - image).mean() > 5  # the classes are overlaid

    run_demo(toy_images['ade'], SEGMENTOR, tmp_path / 'clear.png', '--opacity', '0')
    assert np.abs(mmcv.imread(str(tmp_path / 'clear.png')).astype(int) - image).max() <= 1


@pytest.mark.slow
def test_segmentation_with_a_checkpoint_does_not_warn(tmp_path, toy_images, recwarn):
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    cfg = Config.fromfile(str(REPO / SEGMENTOR))
    init_default_scope(cfg.default_scope)
    checkpoint = tmp_path / 'seg.pth'
    torch.save({'state_dict': MODELS.build(cfg.model).state_dict()}, checkpoint)
    assert run_demo(toy_images['ade'], SEGMENTOR, tmp_path / 'seg.png', checkpoint) == 0
    assert not [w for w in recwarn if 'random' in str(w.message)]


@pytest.mark.slow
def test_detection_boxes_and_masks(tmp_path, toy_images):
    image = mmcv.imread(toy_images['coco'])
    with pytest.warns(UserWarning, match='random'):
        run_demo(toy_images['coco'], DETECTOR, tmp_path / 'none.png', '--pred-score-thr', '1')
    assert np.abs(mmcv.imread(str(tmp_path / 'none.png')).astype(int) - image).max() <= 1
    run_demo(toy_images['coco'], DETECTOR, tmp_path / 'all.png', '--pred-score-thr', '0')
    drawn = mmcv.imread(str(tmp_path / 'all.png'))
    assert drawn.shape == image.shape
    assert (np.abs(drawn.astype(int) - image).max(axis=2) > 30).mean() > 0.01


@pytest.mark.slow
def test_classification_top5_drawn(tmp_path, toy_images, capsys):
    image = mmcv.imread(toy_images['voc'])
    with pytest.warns(UserWarning, match='random'):
        assert run_demo(toy_images['voc'], CLASSIFIER, tmp_path / 'cls.png') == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line[:2] in {f'{i}.' for i in range(1, 6)}]
    assert len(lines) == 5
    scores = [float(line.rsplit(':', 1)[1]) for line in lines]
    assert scores == sorted(scores, reverse=True)
    drawn = mmcv.imread(str(tmp_path / 'cls.png')).astype(int)
    assert drawn.shape == image.shape
    height, width = image.shape[:2]
    assert np.abs(drawn[:height // 3, :width // 3] - image[:height // 3, :width // 3]).mean() > 5
    assert np.abs(drawn[-height // 4:, -width // 4:] - image[-height // 4:, -width // 4:]).max() <= 1


def test_a_config_of_another_scope_is_refused(tmp_path, capsys):
    config = tmp_path / 'plain.py'
    config.write_text("default_scope = 'mmengine'\nmodel = dict(type='Linear')\n")
    image = tmp_path / 'image.png'
    mmcv.imwrite(np.zeros((32, 32, 3), np.uint8), str(image))
    with pytest.raises(SystemExit) as exit_info:
        load_demo().main([str(image), str(config), '--out-file', str(tmp_path / 'out.png')])
    assert exit_info.value.code == 2
    assert "default_scope is 'mmengine'" in capsys.readouterr().err

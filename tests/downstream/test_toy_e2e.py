"""End to end on the toy data, as a user runs it: make_toy_data.py, tools/train.py, tools/test.py.

For each task (UperNet on ADE20K-format data, Faster R-CNN on VOC-format data, Cascade Mask R-CNN on
COCO-format data) and each backbone (a small SLaK, a small PeLK): the training loss falls, the trained
model's metric (mmseg's IoUMetric, mmdet's VOCMetric, mmdet's CocoMetric for boxes and masks) beats an
untrained model's by a clear margin, and ``tools/test.py --show-dir`` writes one prediction image per
test image. Resuming from the mid-training checkpoint continues the run where it stopped.
"""
import glob
import json
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope

import mmslak  # noqa: F401

pytestmark = pytest.mark.slow

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
NUM_TEST_IMAGES = 50  # make_toy_data.py's default --num-val


class Task:

    def __init__(self, config, margins, checkpoint):
        self.config = osp.join(ROOT, 'configs', 'toy', config)
        self.margins = margins
        self.checkpoint = checkpoint


# Margins by which the trained model's metric must beat the untrained one's. The toy configs fix the
# training seed; measured on 2 cores (README.md, Quick start): UperNet mIoU 29.5 (SLaK) / 28.2 (PeLK) from
# 1.5-6.3 untrained, Faster R-CNN VOC mAP 0.322 / 0.332 from 0.003, Cascade Mask R-CNN COCO box AP
# 0.148 / 0.208 and mask AP 0.159 / 0.222 from 0.002 or less. Unseeded runs spread widely for the
# detectors (Cascade SLaK box AP 0.115-0.206), hence margins well under the seeded results.
TASKS = {
    'upernet-slak': Task('upernet_slak-toy_1xb8-1000iter_toy-ade-128x128.py', {'mIoU': 10.}, 'iter_1000.pth'),
    'upernet-pelk': Task('upernet_pelk-toy_1xb8-1000iter_toy-ade-128x128.py', {'mIoU': 10.}, 'iter_1000.pth'),
    'faster-rcnn-slak': Task('faster-rcnn_slak-toy_fpn_1xb4-8e_toy-voc.py', {'pascal_voc/mAP': 0.1},
                             'epoch_8.pth'),
    'faster-rcnn-pelk': Task('faster-rcnn_pelk-toy_fpn_1xb4-8e_toy-voc.py', {'pascal_voc/mAP': 0.1},
                             'epoch_8.pth'),
    'cascade-mask-rcnn-slak': Task('cascade-mask-rcnn_slak-toy_fpn_1xb4-8e_toy-coco.py',
                                   {'coco/bbox_mAP': 0.08, 'coco/segm_mAP': 0.08}, 'epoch_8.pth'),
    'cascade-mask-rcnn-pelk': Task('cascade-mask-rcnn_pelk-toy_fpn_1xb4-8e_toy-coco.py',
                                   {'coco/bbox_mAP': 0.08, 'coco/segm_mAP': 0.08}, 'epoch_8.pth'),
}


def run(*args):
    """Run a repository script from the repository root (the toy configs' data paths are relative)."""
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, f'{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}'
    return result


def logged_records(work_dir):
    """The json lines mmengine's LoggerHook writes during training: losses, then evaluation metrics."""
    [log] = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    with open(log) as f:
        return [json.loads(line) for line in f]


def evaluation_metrics(work_dir):
    """The metrics of a tools/test.py run, from the json line mmengine's LoggerHook writes."""
    [log] = glob.glob(osp.join(work_dir, '*', '*.json'))
    with open(log) as f:
        return json.loads(f.readlines()[-1])


def save_untrained_checkpoint(config, path):
    cfg = Config.fromfile(config)
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    model.init_weights()
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), path)


@pytest.fixture(scope='module')
def toy_data():
    run(osp.join('tools', 'dataset_converters', 'make_toy_data.py'))


@pytest.fixture(scope='module')
def trained(toy_data, tmp_path_factory):
    """Train each task once per test session; returns its work dir."""
    runs = {}

    def train(name):
        if name not in runs:
            work_dir = str(tmp_path_factory.mktemp(name))
            run(osp.join('tools', 'train.py'), TASKS[name].config, '--work-dir', work_dir)
            runs[name] = work_dir
        return runs[name]

    return train


@pytest.mark.parametrize('name', list(TASKS))
def test_train_then_test(name, trained, tmp_path):
    task = TASKS[name]
    work_dir = trained(name)
    records = logged_records(work_dir)
    losses = [record['loss'] for record in records if 'loss' in record]
    assert len(losses) >= 10
    assert sum(losses[-3:]) / 3 < 0.8 * losses[0], f'the loss did not fall: {losses}'

    untrained = str(tmp_path / 'untrained.pth')
    save_untrained_checkpoint(task.config, untrained)
    run(osp.join('tools', 'test.py'), task.config, untrained, '--work-dir', str(tmp_path / 'untrained'))
    before = evaluation_metrics(str(tmp_path / 'untrained'))

    show_dir = tmp_path / 'show'
    run(osp.join('tools', 'test.py'), task.config, osp.join(work_dir, task.checkpoint),
        '--work-dir', str(tmp_path / 'trained'), '--show-dir', str(show_dir))
    after = evaluation_metrics(str(tmp_path / 'trained'))
    for metric, margin in task.margins.items():
        assert after[metric] >= before[metric] + margin, f'{metric}: untrained {before}, trained {after}'
    images = [path for ext in ('png', 'jpg') for path in glob.glob(f'{show_dir}/**/*.{ext}', recursive=True)]
    assert len(images) == NUM_TEST_IMAGES


def test_resume_continues_the_run(trained, tmp_path):
    """Resume the UperNet run from its mid-training checkpoint in a new work dir: it continues there."""
    task = TASKS['upernet-slak']
    first_run = [record for record in logged_records(trained('upernet-slak')) if 'loss' in record]
    max_iters = first_run[-1]['iter']
    run(osp.join('tools', 'train.py'), task.config, '--work-dir', str(tmp_path),
        '--resume', osp.join(trained('upernet-slak'), f'iter_{max_iters // 2}.pth'))
    resumed = [record for record in logged_records(str(tmp_path)) if 'loss' in record]
    # It logs exactly the iterations the first run logged after the checkpoint.
    assert [record['iter'] for record in resumed] == [
        record['iter'] for record in first_run if record['iter'] > max_iters // 2]
    # The learning rate continues the schedule, and the loss is that of a half-trained model, well
    # below the untrained model's loss of the first logged iterations.
    first_lr = {record['iter']: record['lr'] for record in first_run}
    assert resumed[0]['lr'] == pytest.approx(first_lr[resumed[0]['iter']])
    assert resumed[0]['loss'] < 0.8 * first_run[0]['loss']
    assert osp.isfile(osp.join(tmp_path, f'iter_{max_iters}.pth'))

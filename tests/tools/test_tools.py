"""tools/train.py and tools/test.py as users run them: training, resume, bf16 AMP, gloo DDP, one-line errors."""
import os
import subprocess
import sys

import pytest
import torch
from tool_runs import ROOT, run, write_image_folder
from tool_runs import TINY_CLASSIFIER as CONFIG

import mmslak  # noqa: F401  (allow-lists mmengine checkpoint classes for torch.load)


@pytest.fixture(scope='module')
def image_folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp('data') / 'images')


def train(work_dir, image_folder, *extra, max_iters=2):
    return run('tools/train.py', CONFIG, '--work-dir', work_dir, '--cfg-options',
               f'train_dataloader.dataset.data_root={image_folder}', f'train_cfg.max_iters={max_iters}', *extra)


def checkpoint_iter(path):
    return torch.load(path, map_location='cpu')['meta']['iter']


def test_train_then_resume_continues_the_run(tmp_path, image_folder):
    first = train(tmp_path, image_folder, max_iters=2)
    assert first.returncode == 0, first.stderr[-3000:]
    assert checkpoint_iter(tmp_path / 'iter_2.pth') == 2

    resumed = train(tmp_path, image_folder, '--resume', max_iters=4)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert 'resumed epoch: 0, iter: 2' in log
    assert 'Iter(train) [3/4]' in log and 'Iter(train) [1/4]' not in log
    assert checkpoint_iter(tmp_path / 'iter_4.pth') == 4
    # the optimizer state came back: AdamW's step count continues from 2
    state = torch.load(tmp_path / 'iter_4.pth', map_location='cpu')['optimizer']['state']
    assert all(int(s['step']) == 4 for s in state.values())


def test_amp_means_bf16_autocast_on_cpu(tmp_path, image_folder):
    from mmslak.engine.cpu_runtime import cpu_supports_bf16
    result = train(tmp_path, image_folder, '--amp', max_iters=2)
    if not cpu_supports_bf16():
        assert result.returncode == 2 and 'bfloat16' in result.stderr
        return
    assert result.returncode == 0, result.stderr[-3000:]
    assert "type='CPUAmpOptimWrapper'" in (tmp_path / 'tiny_slak_classifier.py').read_text()


def test_amp_on_cpu_refuses_two_stage_detectors_in_one_line(tmp_path):
    """mmcv 2.1.0's CPU nms and RoIAlign have no bfloat16 kernels: refused before anything is built."""
    # The toy config's data root is relative: small toy VOC data under the directory the tool runs in
    made = run(ROOT / 'tools/dataset_converters/make_toy_data.py', '--out', tmp_path / 'data' / 'toy', '--tasks',
               'voc', '--num-train', '4', '--num-val', '2', '--size', '64')
    assert made.returncode == 0, made.stderr[-3000:]
    result = run(ROOT / 'tools/train.py', ROOT / 'configs/toy/faster-rcnn_slak-toy_fpn_1xb4-8e_toy-voc.py',
                 '--work-dir', tmp_path / 'work_dir', '--amp', cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "train.py: error: --amp without a GPU means bfloat16 autocast on the CPU, but mmcv 2.1.0's CPU nms and "
        "RoIAlign, which this two-stage detector runs while training, take float32 only; train it without --amp "
        "(or with --amp on a GPU)")
    assert not list(tmp_path.glob('work_dir/*.pth'))


def test_test_tool_evaluates_and_dumps_predictions(tmp_path, image_folder):
    assert train(tmp_path, image_folder, max_iters=2).returncode == 0
    out = tmp_path / 'preds.pkl'
    result = run('tools/test.py', CONFIG, tmp_path / 'iter_2.pth', '--work-dir', tmp_path, '--out', out,
                 '--cfg-options', f'test_dataloader.dataset.data_root={image_folder}')
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'accuracy/top1' in result.stdout + result.stderr
    import pickle
    with open(out, 'rb') as f:
        assert len(pickle.load(f)) == 16


@pytest.mark.parametrize('args, message', [
    (['does/not/exist.py'], 'config file does/not/exist.py does not exist'),
    ([CONFIG, '--cfg-options', 'optim_wraper.optimizer.lr=0.1'], '"optim_wraper.optimizer.lr" does not exist'),
    ([CONFIG, '--cfg-options', 'model.backbone.arch.depth=3'], '"model.backbone.arch.depth" does not exist'),
    ([CONFIG, '--resume', 'missing.pth'], '--resume checkpoint missing.pth does not exist'),
])
def test_train_user_errors_are_one_line(args, message, tmp_path):
    result = run('tools/train.py', *args, '--work-dir', tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_missing_pretrained_checkpoint_is_one_line(tmp_path):
    config = tmp_path / 'pretrained.py'
    config.write_text(f"_base_ = ['{CONFIG}']\n"
                      "model = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='no.pth')))\n")
    result = run('tools/train.py', config, '--work-dir', tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        'train.py: error: model.backbone.init_cfg checkpoint no.pth does not exist']


def test_test_tool_missing_checkpoint_is_one_line(tmp_path):
    result = run('tools/test.py', CONFIG, tmp_path / 'nothing.pth', '--work-dir', tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f'test.py: error: checkpoint {tmp_path}/nothing.pth does not exist']


def test_new_constructor_argument_is_accepted(tmp_path, image_folder):
    # keys that do not exist yet are allowed inside a dict with a 'type': they are constructor arguments
    result = train(tmp_path, image_folder, 'model.backbone.drop_path_rate=0.1', max_iters=1)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_dist_train_runs_two_gloo_processes_and_resumes(tmp_path, image_folder):
    def dist_train(max_iters, *extra):
        return subprocess.run(
            ['bash', 'tools/dist_train.sh', str(CONFIG), '2', '--work-dir', str(tmp_path), *extra, '--cfg-options',
             f'train_dataloader.dataset.data_root={image_folder}', f'train_cfg.max_iters={max_iters}',
             'default_hooks.checkpoint.interval=1'],
            cwd=ROOT, capture_output=True, text=True, timeout=600,
            env={**os.environ, 'PYTHON': sys.executable, 'PORT': '29517', 'OMP_NUM_THREADS': '1'})

    result = dist_train(2)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert 'Distributed training: True' in log
    assert "type='CPUDistributedDataParallel'" in (tmp_path / 'tiny_slak_classifier.py').read_text()
    # rank 0 alone wrote complete checkpoints, through a temporary file
    assert checkpoint_iter(tmp_path / 'iter_2.pth') == 2 and not list(tmp_path.glob('.*.partial'))

    # both processes skip the broken newest checkpoint and resume from the same one
    newest = tmp_path / 'iter_2.pth'
    newest.write_bytes(newest.read_bytes()[:1000])
    resumed = dist_train(3, '--resume')
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert log.count(f'resuming from {tmp_path / "iter_1.pth"}') == 2
    assert 'resumed epoch: 0, iter: 1' in log
    assert checkpoint_iter(tmp_path / 'iter_3.pth') == 3

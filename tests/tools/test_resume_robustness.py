"""Checkpoints survive kills and truncation: atomic writes, and ``--resume`` from the newest intact file.

The tool tests run tools/train.py on the tiny classifier of tests/data/configs (a few iterations, a checkpoint
every iteration) with SparseTrainingHook, so a resumed run must also bring back the masks and the mask
generator's random state.
"""
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from tool_runs import ROOT, run, write_image_folder
from tool_runs import TINY_CLASSIFIER as CONFIG

import mmslak  # noqa: F401  (installs the atomic local backend and safe checkpoint loading)
from mmslak.engine.checkpoint import (CheckpointReadError, atomic_write_bytes, checkpoint_mismatch,
                                      find_resumable_checkpoint, read_checkpoint, remove_interrupted_writes)

# Masks change at every optimizer step and regrow at random: resuming must restore both masks and generator.
SPARSE = ("custom_hooks = [dict(type='SparseTrainingHook', sparsity=0.5, init='uniform', growth='random', "
          "update_interval=1, prune_rate=0.3, params='backbone')]\n")


@pytest.fixture(scope='module')
def image_folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp('data') / 'images')


@pytest.fixture(scope='module')
def sparse_config(tmp_path_factory):
    config = tmp_path_factory.mktemp('config') / 'tiny_sparse.py'
    config.write_text(f"_base_ = ['{CONFIG}']\n{SPARSE}")
    return config


def train_args(config, work_dir, image_folder, max_iters, *extra):
    return ['tools/train.py', config, '--work-dir', work_dir, *extra, '--cfg-options',
            f'train_dataloader.dataset.data_root={image_folder}', f'train_cfg.max_iters={max_iters}',
            'default_hooks.checkpoint.interval=1']


def load(path):
    return torch.load(path, map_location='cpu')


# ---------------------------------------------------------------- atomic writes and reading, in-process


def test_atomic_write_replaces_the_file_and_keeps_permissions(tmp_path):
    target = tmp_path / 'sub' / 'iter_1.pth'
    atomic_write_bytes(b'first', target)
    atomic_write_bytes(b'second', target)
    assert target.read_bytes() == b'second'
    assert os.listdir(target.parent) == ['iter_1.pth']  # no temporary file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_checkpoints_saved_through_mmengine_are_written_atomically(tmp_path):
    from mmengine.fileio import get_file_backend
    from mmengine.runner.checkpoint import save_checkpoint

    from mmslak.engine.checkpoint import AtomicLocalBackend
    assert isinstance(get_file_backend(str(tmp_path)), AtomicLocalBackend)
    save_checkpoint({'meta': {'iter': 3}, 'state_dict': {'w': torch.ones(2)}}, str(tmp_path / 'iter_3.pth'))
    assert read_checkpoint(str(tmp_path / 'iter_3.pth'))['meta'] == {'iter': 3}


def test_kill_during_a_write_leaves_the_old_file_intact(tmp_path):
    """SIGKILL while 400 MB are being written: the final name still holds the previous complete file."""
    target = tmp_path / 'iter_1.pth'
    atomic_write_bytes(b'complete old checkpoint', target)
    writer = subprocess.Popen([sys.executable, '-c', (
        'import sys; from mmslak.engine.checkpoint import atomic_write_bytes; '
        'atomic_write_bytes(bytes(400 * 2**20), sys.argv[1])'), str(target)], cwd=ROOT)
    deadline = time.monotonic() + 120
    while not any(name.endswith('.partial') for name in os.listdir(tmp_path)):
        assert writer.poll() is None and time.monotonic() < deadline, 'the writer never started writing'
        time.sleep(0.005)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert target.read_bytes() == b'complete old checkpoint'
    leftovers = remove_interrupted_writes(str(tmp_path))
    assert len(leftovers) == 1 and os.listdir(tmp_path) == ['iter_1.pth']


def save(path, step, **extra):
    torch.save({'meta': {'iter': step}, 'state_dict': {'w': torch.full((4, ), float(step))}, **extra}, path)


def test_newest_intact_checkpoint_is_found_and_broken_ones_named(tmp_path):
    for step in (1, 2, 3, 10):
        save(tmp_path / f'iter_{step}.pth', step)
    (tmp_path / 'best_accuracy_iter_9.pth').write_bytes(b'')  # an evaluation snapshot is never a resume point
    full = (tmp_path / 'iter_10.pth').read_bytes()
    (tmp_path / 'iter_10.pth').write_bytes(full[:len(full) // 2])  # a copy cut short
    (tmp_path / 'iter_3.pth').write_bytes(b'')  # a disk that filled up
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_10.pth'))
    found, skipped = find_resumable_checkpoint(str(tmp_path))
    assert found == str(tmp_path / 'iter_2.pth')  # numeric order: 10 is newer than 3 and 2
    assert [path for path, _ in skipped] == [str(tmp_path / 'iter_10.pth'), str(tmp_path / 'iter_3.pth')]
    assert 'central directory' in skipped[0][1]
    assert skipped[1][1] == 'the file is empty'


def test_checkpoints_in_the_hooks_out_dir_are_found(tmp_path):
    out_dir = tmp_path / 'elsewhere'
    out_dir.mkdir()
    save(out_dir / 'epoch_4.pth', 4)
    save(out_dir / 'epoch_5.pth', 5)
    (tmp_path / 'last_checkpoint').write_text(str(out_dir / 'epoch_5.pth'))
    assert find_resumable_checkpoint(str(tmp_path)) == (str(out_dir / 'epoch_5.pth'), [])
    assert find_resumable_checkpoint(str(tmp_path / 'empty')) == (None, [])


def test_a_file_that_is_no_training_checkpoint_is_refused(tmp_path):
    torch.save({'w': torch.ones(1)}, tmp_path / 'iter_1.pth')
    with pytest.raises(CheckpointReadError, match='not a training checkpoint'):
        read_checkpoint(str(tmp_path / 'iter_1.pth'))


def test_checkpoint_mismatch_lists_shapes_missing_and_unexpected():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    state = model.state_dict()
    assert checkpoint_mismatch(model, state) is None
    state = {**state, '0.weight': torch.zeros(5, 3), 'extra': torch.zeros(1)}
    del state['1.bias']
    assert checkpoint_mismatch(model, state) == (
        '1 weights differ in shape (0.weight: checkpoint [5, 3], model [4, 3]), '
        '1 model weights are not in the checkpoint (1.bias), 1 checkpoint weights are not in the model (extra)')


# ---------------------------------------------------------------- tools/train.py --resume


@pytest.mark.slow
def test_resume_skips_broken_checkpoints_and_repeats_the_run_exactly(tmp_path, image_folder, sparse_config):
    work_dir = tmp_path / 'run'
    first = run(*train_args(sparse_config, work_dir, image_folder, 4))
    assert first.returncode == 0, first.stderr[-3000:]
    expected = {step: load(work_dir / f'iter_{step}.pth') for step in (3, 4)}
    newest = work_dir / 'iter_4.pth'
    newest.write_bytes(newest.read_bytes()[:newest.stat().st_size // 2])  # a copy cut short
    (work_dir / 'iter_3.pth').write_bytes(b'')  # a disk that filled up

    resumed = run(*train_args(sparse_config, work_dir, image_folder, 4, '--resume'))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert f'skipping {newest}, it cannot be read: ' in log and 'central directory' in log
    assert f'skipping {work_dir / "iter_3.pth"}, it cannot be read: the file is empty' in log
    assert f'resuming from {work_dir / "iter_2.pth"}' in log
    assert 'resumed epoch: 0, iter: 2' in log and 'Iter(train) [3/4]' in log
    assert 'masks restored from the checkpoint' in log

    # Iterations 3 and 4 after the resume repeat the first run: same weights, masks and mask generator (the
    # masks change at every step with random regrowth, so a lost mask or generator state would show).
    for step in (3, 4):
        got, want = load(work_dir / f'iter_{step}.pth'), expected[step]
        assert got['meta']['iter'] == step
        torch.testing.assert_close(got['state_dict'], want['state_dict'], rtol=0, atol=0)
        assert got['sparse_training']['masks'].keys() == want['sparse_training']['masks'].keys()
        for name, packed in want['sparse_training']['masks'].items():
            assert torch.equal(got['sparse_training']['masks'][name]['bits'], packed['bits']), name
        assert torch.equal(got['sparse_training']['generator_state'], want['sparse_training']['generator_state'])


def test_resume_from_a_broken_file_is_one_line(tmp_path):
    broken = tmp_path / 'iter_5.pth'
    broken.write_bytes(b'PK\x03\x04 not really a zip')
    result = run('tools/train.py', CONFIG, '--work-dir', tmp_path, '--resume', broken)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'train.py: error: --resume checkpoint {broken} cannot be read: ')


def test_resume_with_only_broken_checkpoints_is_one_line(tmp_path):
    (tmp_path / 'iter_1.pth').write_bytes(b'')
    result = run('tools/train.py', CONFIG, '--work-dir', tmp_path, '--resume')
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f'train.py: error: --resume: no checkpoint in {tmp_path} can be read (1 broken, the newest '
        f'{tmp_path / "iter_1.pth"}: the file is empty); remove them to start afresh')


@pytest.mark.slow
def test_resume_with_another_architecture_is_refused_before_anything_is_written(tmp_path, image_folder):
    first = run(*train_args(CONFIG, tmp_path, image_folder, 1))
    assert first.returncode == 0, first.stderr[-3000:]
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir() if path.is_file()}
    resumed = run(*train_args(CONFIG, tmp_path, image_folder, 2, '--resume'), 'model.backbone.arch.widths=[8,16,32,96]',
                  'model.head.in_channels=124')
    assert resumed.returncode == 2
    lines = resumed.stderr.strip().splitlines()
    assert lines[-1].startswith(f'train.py: error: newest checkpoint {tmp_path / "iter_1.pth"} does not fit the '
                                "config's model: ")
    assert 'weights differ in shape' in lines[-1]
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir() if path.is_file()} == before


@pytest.mark.slow
def test_sigkill_at_random_moments_while_saving_never_breaks_resume(tmp_path, image_folder):
    """Kill a run that saves every iteration, four times: at a random moment after its first save, or as soon
    as a save is under way (its temporary file exists). Every resume works and continues the count."""
    rng = random.Random(0)
    work_dir = tmp_path / 'run'
    resumed_from = []
    for attempt in range(4):
        existing = {path.name for path in work_dir.glob('iter_*.pth')}
        process = subprocess.Popen([sys.executable, *map(str, train_args(CONFIG, work_dir, image_folder, 1000,
                                                                         '--resume'))],
                                   cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 300
        while not {path.name for path in work_dir.glob('iter_*.pth')} - existing:
            assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()[-3000:]
            time.sleep(0.01)
        if attempt % 2:
            time.sleep(rng.uniform(0, 0.5))
        else:
            while not list(work_dir.glob('.*.partial')):
                assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()[-3000:]
        process.send_signal(signal.SIGKILL)
        log = process.communicate()[0]
        if resumed_from:
            assert f'resumed epoch: 0, iter: {resumed_from[-1]}' in log
        # every file under a checkpoint name is complete
        steps = sorted(int(path.stem.split('_')[1]) for path in work_dir.glob('iter_*.pth'))
        for step in steps:
            assert read_checkpoint(str(work_dir / f'iter_{step}.pth'))['meta']['iter'] == step
        resumed_from.append(steps[-1])
    assert resumed_from == sorted(resumed_from) and resumed_from[-1] > resumed_from[0]

    final = run(*train_args(CONFIG, work_dir, image_folder, resumed_from[-1] + 2, '--resume'))
    assert final.returncode == 0, final.stderr[-3000:]
    log = final.stdout + final.stderr
    assert f'resumed epoch: 0, iter: {resumed_from[-1]}' in log
    # It trains the two remaining iterations, saving after each (which iterations are logged depends on
    # where the resumed run falls in an epoch of the tiny dataset).
    saved = [int(count) for count in re.findall(r'Saving checkpoint at (\d+) iterations', log)]
    assert saved == [resumed_from[-1] + 1, resumed_from[-1] + 2], log[-3000:]
    assert load(work_dir / f'iter_{resumed_from[-1] + 2}.pth')['meta']['iter'] == resumed_from[-1] + 2
    assert not list(work_dir.glob('.*.partial'))

"""End to end on the toy data, as a user runs it: make_toy_data.py, tools/train.py, tools/test.py.

For each task (UperNet on ADE20K-format data, Faster R-CNN on VOC-format data, Cascade Mask R-CNN on
COCO-format data) and each backbone (a small SLaK, a small PeLK): the training loss falls, the trained
model's metric (mmseg's IoUMetric, mmdet's VOCMetric, mmdet's CocoMetric for boxes and masks) beats an
untrained model's by a clear margin, and ``tools/test.py --show-dir`` writes one prediction image per
test image. Where a task clears its margin sooner, it trains only the first part of its config's schedule
(``Task.length``). One task trains in two runs: the first stops at the half, the second resumes from its
checkpoint in a new work dir, continues the run where it stopped and ends with the model that is tested.

The runs of one task depend only on each other, so the tasks run side by side: two processes at a time,
one thread each (``OMP_NUM_THREADS=1``). The toy models are too small for a second thread to halve a
step, so on 2 cores two one-thread runs finish sooner than the same runs one after another with two
threads. Training skips its own end-of-training validation (``train_cfg.val_begin`` past the end): the
trained model is evaluated by ``tools/test.py``, the command whose metric the test checks.

The runs are most of the suite's time, so they start with the session, in the background at the lowest
CPU priority (``nice -n 19``), so that they mostly use the CPU time the other tests leave idle.
``tests/conftest.py`` starts them (:class:`ToyRuns`) and puts this module's tests last, where they wait
for the runs they check.
"""
import glob
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from mmengine.runner import set_random_seed

import mmslak  # noqa: F401

pytestmark = pytest.mark.slow

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
NUM_TEST_IMAGES = 50  # make_toy_data.py's default --num-val
PARALLEL_RUNS = 2
THREADS_PER_RUN = 1


class Task:
    """A toy config, trained from scratch for its first ``length`` iterations or epochs (with the schedule of
    the whole config), and the margins by which the trained model must beat the untrained one."""

    def __init__(self, config, margins, unit, length):
        self.config = osp.join(ROOT, 'configs', 'toy', config)
        self.margins = margins
        self.unit = unit
        self.length = length

    def stop_at(self, length):
        """The cfg-option that ends training after ``length`` units, and the checkpoint it leaves."""
        return f'train_cfg.max_{self.unit}s={length}', f'{self.unit}_{length}.pth'


# Margins by which the trained model's metric must beat the untrained one's. The toy configs fix the
# training seed; measured on 2 cores (README.md, Quick start): UperNet mIoU 29.5 (SLaK) / 28.2 (PeLK) from
# 1.5-6.3 untrained, Faster R-CNN VOC mAP 0.322 / 0.332 from 0.003, Cascade Mask R-CNN COCO box AP
# 0.148 / 0.208 and mask AP 0.159 / 0.222 from 0.002 or less. Unseeded runs spread widely for the
# detectors (Cascade SLaK box AP 0.115-0.206), hence margins well under the seeded results.
# The untrained models draw their weights with the config's seed: UperNet-SLaK scores 3.6 mIoU, UperNet-PeLK
# 17.4, what labelling everything background scores. To keep the suite short, UperNet-SLaK trains the first
# half of its 1000 iterations (28.3 mIoU with one thread; UperNet-PeLK needs all 1000 for its 27.7) and Faster
# R-CNN the first 4 of its 8 epochs (0.151 / 0.216 mAP, from under 0.01); Cascade Mask R-CNN trains all 8
# (0.103 / 0.247 box AP): with 6 the seeded SLaK run reached 0.043.
TASKS = {
    'upernet-slak': Task('upernet_slak-toy_1xb8-1000iter_toy-ade-128x128.py', {'mIoU': 10.}, 'iter', 500),
    'upernet-pelk': Task('upernet_pelk-toy_1xb8-1000iter_toy-ade-128x128.py', {'mIoU': 10.}, 'iter', 1000),
    'faster-rcnn-slak': Task('faster-rcnn_slak-toy_fpn_1xb4-8e_toy-voc.py', {'pascal_voc/mAP': 0.1}, 'epoch', 4),
    'faster-rcnn-pelk': Task('faster-rcnn_pelk-toy_fpn_1xb4-8e_toy-voc.py', {'pascal_voc/mAP': 0.1}, 'epoch', 4),
    'cascade-mask-rcnn-slak': Task('cascade-mask-rcnn_slak-toy_fpn_1xb4-8e_toy-coco.py',
                                   {'coco/bbox_mAP': 0.08, 'coco/segm_mAP': 0.08}, 'epoch', 8),
    'cascade-mask-rcnn-pelk': Task('cascade-mask-rcnn_pelk-toy_fpn_1xb4-8e_toy-coco.py',
                                   {'coco/bbox_mAP': 0.08, 'coco/segm_mAP': 0.08}, 'epoch', 8),
}
RESUMED_TASK = 'upernet-slak'
# Trains uninterrupted with the same recipe: its learning rates are those the resumed run must continue.
SCHEDULE_REFERENCE_TASK = 'upernet-pelk'
# Training validates nowhere: tools/test.py evaluates the trained model.
NO_TRAINING_VALIDATION = ('--cfg-options', 'train_cfg.val_begin=1000000000')
# The runs take the CPU time the other tests leave idle.
LOWEST_PRIORITY = ('nice', '-n', '19') if shutil.which('nice') else ()


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


def save_untrained_checkpoints(*configs_and_paths):
    """Build each config's model with its initial weights, drawn with the config's seed, and save it to the
    path after it (run in a process of its own, see :class:`ToyRuns`)."""
    for config, path in zip(configs_and_paths[::2], configs_and_paths[1::2]):
        cfg = Config.fromfile(config)
        init_default_scope(cfg.default_scope)
        set_random_seed(cfg.randomness.seed)
        model = MODELS.build(cfg.model)
        model.init_weights()
        torch.save(dict(state_dict=model.state_dict(), meta=dict()), path)


class ToyRuns:
    """The runs of the given tasks, started at once in the background: two processes at a time, at the
    lowest CPU priority. :meth:`result` waits for a task's runs; :meth:`stop` kills what still runs.

    Args:
        names (Iterable[str]): keys of ``TASKS``.
        tmp_path_factory (pytest.TempPathFactory): makes each task's directory.
    """

    def __init__(self, names, tmp_path_factory):
        self._processes = set()
        self._lock = threading.Lock()
        self._stopped = False
        self._pool = ThreadPoolExecutor(max_workers=PARALLEL_RUNS)
        roots = {name: str(tmp_path_factory.mktemp(name)) for name in names}
        toy_data = self._pool.submit(self.run, osp.join('tools', 'dataset_converters', 'make_toy_data.py'))
        # In a process of their own: building a model switches mmengine's process-wide default scope, and the
        # other tests of this session run beside these runs.
        untrained = self._pool.submit(self.run, __file__, *(
            arg for name in names for arg in (TASKS[name].config, self.untrained(roots[name]))))
        # The longest tasks (Cascade Mask R-CNN, last in TASKS) first, so that the two workers end together.
        order = sorted(names, key=list(TASKS).index, reverse=True)
        self._futures = {
            name: self._pool.submit(self.run_task, name, roots[name], toy_data, untrained)
            for name in order
        }

    @staticmethod
    def untrained(root):
        """Where the task's untrained checkpoint is saved."""
        return osp.join(root, 'untrained.pth')

    def result(self, name):
        """The directories of the task's runs, once they have ended."""
        return self._futures[name].result()

    def stop(self):
        with self._lock:
            self._stopped = True
            for process in self._processes:
                process.kill()
        self._pool.shutdown(cancel_futures=True)

    def run(self, *args):
        """Run a repository script from the repository root (the toy configs' data paths are relative)."""
        env = dict(os.environ, OMP_NUM_THREADS=str(THREADS_PER_RUN))
        with self._lock:
            if self._stopped:
                raise RuntimeError('the test session has ended')
            process = subprocess.Popen([*LOWEST_PRIORITY, sys.executable, *args], cwd=ROOT, env=env, text=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            self._processes.add(process)
        try:
            stdout, stderr = process.communicate()
        finally:
            with self._lock:
                self._processes.discard(process)
        assert process.returncode == 0, f'{args} failed:\n{stdout[-3000:]}\n{stderr[-3000:]}'

    def run_task(self, name, root, *preparations):
        """Train the task from scratch (the resumed task in two runs), evaluate the untrained and the
        trained model; returns the directories of the runs."""
        task = TASKS[name]
        dirs = {key: osp.join(root, key) for key in ('train', 'untrained', 'trained', 'show', 'resumed')}
        for preparation in preparations:
            preparation.result()
        train = osp.join('tools', 'train.py')
        stop, checkpoint = task.stop_at(task.length)
        if name == RESUMED_TASK:
            # The first run stops at the half and leaves its checkpoint there; the second resumes it in a new
            # work dir and finishes. Both keep the schedule of the whole config.
            first_stop, first_checkpoint = task.stop_at(task.length // 2)
            self.run(train, task.config, '--work-dir', dirs['train'], *NO_TRAINING_VALIDATION, first_stop)
            self.run(train, task.config, '--work-dir', dirs['resumed'], '--resume',
                     osp.join(dirs['train'], first_checkpoint), *NO_TRAINING_VALIDATION, stop)
            trained = osp.join(dirs['resumed'], checkpoint)
        else:
            self.run(train, task.config, '--work-dir', dirs['train'], *NO_TRAINING_VALIDATION, stop)
            trained = osp.join(dirs['train'], checkpoint)
        test = osp.join('tools', 'test.py')
        self.run(test, task.config, self.untrained(root), '--work-dir', dirs['untrained'])
        self.run(test, task.config, trained, '--work-dir', dirs['trained'], '--show-dir', dirs['show'])
        return dirs


def loss_records(work_dir):
    """The records of a training run that carry a loss (the others are evaluation metrics)."""
    return [record for record in logged_records(work_dir) if 'loss' in record]


def training_losses(name, dirs):
    """The loss records of the task's training, both runs of the resumed task."""
    runs = ('train', 'resumed') if name == RESUMED_TASK else ('train', )
    return [record for run_name in runs for record in loss_records(dirs[run_name])]


def selected_tasks(items):
    """The tasks whose tests are among ``items`` (``-k`` and ``-m`` leave out the others)."""
    names = set()
    for item in items:
        if getattr(item, 'module', None) is not sys.modules[__name__]:
            continue
        if item.originalname == 'test_resume_continues_the_run':
            names.update((RESUMED_TASK, SCHEDULE_REFERENCE_TASK))
        else:
            names.add(item.callspec.params['name'])
    return names


@pytest.fixture
def toy_runs(toy_e2e_runs):
    """Waits for a task's runs (started by tests/conftest.py) and gives their directories."""
    return toy_e2e_runs.result


@pytest.mark.parametrize('name', list(TASKS))
def test_train_then_test(name, toy_runs):
    task = TASKS[name]
    dirs = toy_runs(name)
    losses = [record['loss'] for record in training_losses(name, dirs)]
    assert len(losses) >= 10
    assert sum(losses[-3:]) / 3 < 0.8 * losses[0], f'the loss did not fall: {losses}'

    before = evaluation_metrics(dirs['untrained'])
    after = evaluation_metrics(dirs['trained'])
    for metric, margin in task.margins.items():
        assert after[metric] >= before[metric] + margin, f'{metric}: untrained {before}, trained {after}'
    images = [path for ext in ('png', 'jpg') for path in glob.glob(f'{dirs["show"]}/**/*.{ext}', recursive=True)]
    assert len(images) == NUM_TEST_IMAGES


def test_resume_continues_the_run(toy_runs):
    """The second run of the UperNet-SLaK task resumes the first at its mid-training checkpoint."""
    dirs = toy_runs(RESUMED_TASK)
    task = TASKS[RESUMED_TASK]
    half = task.length // 2
    first_run, resumed = loss_records(dirs['train']), loss_records(dirs['resumed'])
    # One uninterrupted run of the same recipe (the UperNet-PeLK task, which trains longer) is the reference:
    # the first run logs its iterations up to the checkpoint, the resumed run those after it up to its end,
    # with the same learning rates.
    reference = loss_records(toy_runs(SCHEDULE_REFERENCE_TASK)['train'])
    assert [record['iter'] for record in first_run] == [record['iter'] for record in reference
                                                         if record['iter'] <= half]
    assert [record['iter'] for record in resumed] == [record['iter'] for record in reference
                                                      if half < record['iter'] <= task.length]
    reference_lr = {record['iter']: record['lr'] for record in reference}
    for record in first_run + resumed:
        assert record['lr'] == pytest.approx(reference_lr[record['iter']]), record
    # The resumed model starts half-trained: its loss is well below that of the first logged iterations.
    assert resumed[0]['loss'] < 0.8 * first_run[0]['loss']
    assert osp.isfile(osp.join(dirs['resumed'], task.stop_at(task.length)[1]))


if __name__ == '__main__':
    save_untrained_checkpoints(*sys.argv[1:])

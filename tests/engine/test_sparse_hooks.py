"""SparseTrainingHook and SparseFinetuneHook inside real MMEngine Runner trainings of a tiny model; parameter
selection and SNIP scores on the same model."""
import copy
import itertools
import math
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from mmengine.hooks import EMAHook, Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import Dataset

import mmslak  # noqa: F401  registers the hooks and CPUAmpOptimWrapper
from mmslak.engine.sparse.layer_density import erk_density, snip_scores
from mmslak.engine.sparse.mask_ops import cosine_prune_rate, unpack_mask
from mmslak.engine.sparse.masked_weights_hook import MaskedWeightsHook
from mmslak.engine.sparse.param_selection import select_sparse_params
from mmslak.models import SLaK

_run_ids = itertools.count()
CONFIGS = Path(__file__).parents[2] / 'configs'


class ToyBackbone(nn.Module):

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.large_kernel = nn.Conv2d(8, 8, (9, 3), padding=(4, 1), groups=8, bias=False)
        self.small_kernel = nn.Conv2d(8, 8, 5, padding=2, groups=8, bias=False)
        self.pointwise = nn.Linear(8, 16)

    def forward(self, x):
        x = F.gelu(self.stem(x))
        x = x + self.large_kernel(x) + self.small_kernel(x)
        return F.gelu(self.pointwise(x.mean((2, 3))))


class ToyClassifier(BaseModel):

    def __init__(self):
        super().__init__()
        self.backbone = ToyBackbone()
        self.head = nn.Linear(16, 3)

    def forward(self, inputs, labels=None, mode='tensor'):
        logits = self.head(self.backbone(inputs))
        return dict(loss=F.cross_entropy(logits, labels)) if mode == 'loss' else logits


class TinySLaKClassifier(BaseModel):
    """A SLaK with one block per stage and kernels 13..7: the official parameter layout at toy size."""

    def __init__(self):
        super().__init__()
        self.backbone = SLaK(arch=dict(depths=[1, 1, 1, 1], widths=[8, 16, 32, 64]), kernel_size=(13, 11, 9, 7))
        self.head = nn.Linear(int(64 * 1.3), 3)

    def forward(self, inputs, labels=None, mode='tensor'):
        logits = self.head(self.backbone(inputs)[-1])
        return dict(loss=F.cross_entropy(logits, labels)) if mode == 'loss' else logits


class ToyDataset(Dataset):

    def __init__(self, seed=0, size=32, image_size=12):
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.randn(size, 3, image_size, image_size, generator=generator)
        self.labels = torch.randint(0, 3, (size, ), generator=generator)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return dict(inputs=self.images[index], labels=self.labels[index])


class Recorder(Hook):
    """Records, for every iteration, the masks, the loss and the weights; for every optimizer step, the weights,
    gradients and optimizer state right after the step, before the sparse hook touches them."""

    priority = 'VERY_HIGH'  # its optimizer post-step hook is registered before the sparse hook's

    def __init__(self):
        self.start_masks = None
        self.masks, self.losses, self.weights, self.states, self.steps = [], [], [], [], []

    def before_train(self, runner):
        self.sparse = next(hook for hook in runner.hooks if isinstance(hook, MaskedWeightsHook))
        self.optimizer = runner.optim_wrapper.optimizer
        self.optimizer.register_step_post_hook(self.record_step)

    def record_step(self, optimizer, args, kwargs):
        params = self.sparse.sparse_params
        self.steps.append(
            dict(weights={name: param.detach().clone() for name, param in params.items()},
                 grads={name: param.grad.clone() for name, param in params.items()},
                 momentum={name: optimizer.state[param]['momentum_buffer'].clone()
                           for name, param in params.items() if 'momentum_buffer' in optimizer.state[param]}))

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if self.start_masks is None:
            self.start_masks = {name: mask.clone() for name, mask in self.sparse.masks.items()}

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        params = self.sparse.sparse_params
        self.masks.append({name: mask.clone() for name, mask in self.sparse.masks.items()})
        self.losses.append(outputs['loss'].item())
        self.weights.append({name: param.detach().clone() for name, param in params.items()})
        self.states.append({name: {key: value.clone() for key, value in self.optimizer.state[param].items()
                                   if torch.is_tensor(value) and value.shape == param.shape}
                            for name, param in params.items()})

    def changed_iters(self):
        """1-based iterations after which some mask differs from the previous iteration's."""
        previous = [self.start_masks] + self.masks[:-1]
        return [i + 1 for i, (before, after) in enumerate(zip(previous, self.masks))
                if any(not torch.equal(before[name], after[name]) for name in after)]


SGD = dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=0.01)
ADAMW = dict(type='AdamW', lr=0.01, weight_decay=0.05)


def train(tmp_path, hook, max_iters, optimizer=SGD, accumulative_counts=1, optim_wrapper='OptimWrapper',
          checkpoint_interval=1000, resume=False, load_from=None, work_dir=None, model=ToyClassifier,
          image_size=12, extra_hooks=(), randomness=dict(seed=0), **runner_kwargs):
    torch.manual_seed(0)
    recorder = Recorder()
    run_id = next(_run_ids)
    runner = Runner(
        model=model(),
        work_dir=str(work_dir or tmp_path / f'run{run_id}'),
        experiment_name=f'sparse_test_{run_id}',
        train_dataloader=dict(dataset=ToyDataset(image_size=image_size),
                              sampler=dict(type='DefaultSampler', shuffle=False), batch_size=4, num_workers=0,
                              collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        optim_wrapper=dict(type=optim_wrapper, optimizer=optimizer, accumulative_counts=accumulative_counts),
        custom_hooks=[*extra_hooks, hook, recorder],
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=checkpoint_interval, by_epoch=False)),
        resume=resume,
        load_from=load_from,
        randomness=randomness,
        log_level='WARNING',
        **runner_kwargs)
    runner.train()
    return runner, recorder


def assert_masked_weights_zero(recorder):
    for masks, weights in zip(recorder.masks, recorder.weights):
        for name, mask in masks.items():
            assert torch.all(weights[name][~mask] == 0), name


def smallest_active(mask, weight, num):
    """Reference pruning by argsort: the ``num`` active positions of smallest magnitude."""
    active = mask.flatten().nonzero().squeeze(1)
    order = weight.flatten()[active].abs().argsort()
    pruned = torch.zeros(mask.numel(), dtype=torch.bool)
    pruned[active[order[:num]]] = True
    return pruned.view_as(mask)


def test_select_sparse_params_scopes():
    model = ToyClassifier()
    model.backbone.stem.weight.requires_grad_(False)
    names = lambda scope: [name for name, _ in select_sparse_params(model, scope)]  # noqa: E731
    assert names('backbone') == ['backbone.large_kernel.weight', 'backbone.small_kernel.weight',
                                 'backbone.pointwise.weight']
    assert names('model') == names('backbone') + ['head.weight']
    assert names('large_kernel') == ['backbone.large_kernel.weight']
    assert [name for name, _ in select_sparse_params(model.backbone, 'backbone')] == [
        'large_kernel.weight', 'small_kernel.weight', 'pointwise.weight']
    with pytest.raises(ValueError, match="'backbone', 'model', 'large_kernel'"):
        select_sparse_params(model, 'heads')


def test_snip_scores_equal_gradient_of_multiplicative_mask():
    """Reference: the original SNIP formulation, loss of ``w * m`` differentiated at ``m = 1``."""
    model = ToyClassifier()
    names = [name for name, _ in select_sparse_params(model, 'model')]
    dataset = ToyDataset()
    batch = dict(inputs=dataset.images[:5], labels=dataset.labels[:5])
    before = copy.deepcopy(model.state_dict())
    torch.manual_seed(7)
    scores = snip_scores(model, batch, names)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), 'snip_scores must not modify the model'

    torch.manual_seed(7)
    reference = copy.deepcopy(model)
    params = dict(reference.named_parameters())
    for name in names:
        nn.init.xavier_normal_(params[name].data)
    masks = {name: torch.ones_like(params[name], requires_grad=True) for name in names}
    masked = {name.split('.')[-2]: params[name] * masks[name] for name in names}
    x = F.gelu(F.conv2d(batch['inputs'], masked['stem'], params['backbone.stem.bias'], padding=1))
    x = (x + F.conv2d(x, masked['large_kernel'], padding=(4, 1), groups=8)
         + F.conv2d(x, masked['small_kernel'], padding=2, groups=8))
    x = F.gelu(F.linear(x.mean((2, 3)), masked['pointwise'], params['backbone.pointwise.bias']))
    logits = F.linear(x, masked['head'], params['head.bias'])
    F.cross_entropy(logits, batch['labels']).backward()
    for name in names:
        torch.testing.assert_close(scores[name], masks[name].grad.abs())


@pytest.mark.parametrize('init', ['uniform', 'erk', 'snip'])
def test_initial_density_per_layer(tmp_path, init):
    hook = dict(type='SparseTrainingHook', sparsity=0.4, init=init, params='model', update_interval=100)
    _, recorder = train(tmp_path, hook, max_iters=1)
    masks = recorder.start_masks
    assert sorted(masks) == ['backbone.large_kernel.weight', 'backbone.pointwise.weight',
                             'backbone.small_kernel.weight', 'backbone.stem.weight', 'head.weight']
    counts = {name: int(mask.sum()) for name, mask in masks.items()}
    if init == 'snip':
        # the global top 60% of SNIP scores, then per-layer rounding
        total = sum(mask.numel() for mask in masks.values())
        assert abs(sum(counts.values()) - 0.6 * total) <= len(masks)
        assert len({round(counts[name] / masks[name].numel(), 2) for name in masks}) > 1, 'not layer-wise'
    else:
        shapes = {name: mask.shape for name, mask in masks.items()}
        densities = erk_density(shapes, 0.6) if init == 'erk' else dict.fromkeys(shapes, 0.6)
        for name, mask in masks.items():
            assert abs(counts[name] - densities[name] * mask.numel()) <= 1, name
    assert_masked_weights_zero(recorder)


@pytest.mark.parametrize('optimizer', [SGD, ADAMW], ids=['sgd_momentum', 'adamw'])
def test_pruned_weights_stay_zero_and_updates_keep_counts(tmp_path, optimizer):
    hook = dict(type='SparseTrainingHook', init='uniform', growth='random', update_interval=3, prune_rate=0.5)
    runner, recorder = train(tmp_path, hook, max_iters=7, optimizer=optimizer)
    assert recorder.changed_iters() == [3, 6]
    assert_masked_weights_zero(recorder)
    start_counts = {name: int(mask.sum()) for name, mask in recorder.start_masks.items()}
    for masks in recorder.masks:
        assert {name: int(mask.sum()) for name, mask in masks.items()} == start_counts
    for iteration in (3, 6):
        rate = cosine_prune_rate(iteration, 7, 0.5, 0.005)
        old, new = recorder.masks[iteration - 2], recorder.masks[iteration - 1]
        for name in new:
            num_replace = math.ceil(rate * start_counts[name])
            removed, grown = old[name] & ~new[name], new[name] & ~old[name]
            assert int(removed.sum()) == int(grown.sum()) <= num_replace
            stepped = recorder.steps[iteration - 1]['weights'][name]
            assert torch.all(removed <= smallest_active(old[name], stepped, num_replace)), name
            # grown weights start at zero with a fresh optimizer state
            assert torch.all(recorder.weights[iteration - 1][name][grown] == 0)
            for value in recorder.states[iteration - 1][name].values():
                assert torch.all(value[grown] == 0)
    # the optimizer itself does move masked weights (dense gradients, momentum): the hook zeroes them again
    moved = recorder.steps[-1]['weights']['backbone.pointwise.weight'][~recorder.masks[-2]['backbone.pointwise.weight']]
    assert torch.any(moved != 0)


@pytest.mark.parametrize('growth', ['gradient', 'momentum'])
def test_regrowth_follows_gradient_or_momentum(tmp_path, growth):
    hook = dict(type='SparseTrainingHook', init='uniform', growth=growth, update_interval=2, prune_rate=0.5)
    _, recorder = train(tmp_path, hook, max_iters=3)
    assert recorder.changed_iters() == [2]
    rate = cosine_prune_rate(2, 3, 0.5, 0.005)
    step = recorder.steps[1]
    for name, old in recorder.masks[0].items():
        num_replace = math.ceil(rate * int(old.sum()))
        after_prune = old & ~smallest_active(old, step['weights'][name], num_replace)
        scores = (step['grads'] if growth == 'gradient' else step['momentum'])[name].abs()
        candidates = (~after_prune).flatten().nonzero().squeeze(1)
        expected = after_prune.clone().flatten()
        expected[candidates[scores.flatten()[candidates].argsort(descending=True)[:num_replace]]] = True
        assert torch.equal(recorder.masks[1][name], expected.view_as(old)), name


def test_large_kernel_sparsity_on_slak(tmp_path):
    """Only the official large-kernel branches (LoRA1, LoRA2) are sparse; SNIP and gradient growth work through
    mmslak's depthwise convolution ops."""
    hook = dict(type='SparseTrainingHook', init='snip', growth='gradient', params='large_kernel', update_interval=2)
    _, recorder = train(tmp_path, hook, max_iters=3, model=TinySLaKClassifier, image_size=32)
    assert sorted(recorder.start_masks) == [f'backbone.stages.{stage}.0.large_kernel.{branch}.conv.weight'
                                            for stage in range(4) for branch in ('LoRA1', 'LoRA2')]
    assert recorder.changed_iters() == [2]
    assert_masked_weights_zero(recorder)


def test_gradient_accumulation_updates_only_on_optimizer_steps(tmp_path):
    hook = dict(type='SparseTrainingHook', init='uniform', update_interval=2, prune_rate=0.5)
    _, recorder = train(tmp_path, hook, max_iters=9, accumulative_counts=2)
    # optimizer steps at iterations 2, 4, 6, 8, 9 (the last, partial accumulation); updates every 2 steps
    # except at the final step
    assert len(recorder.steps) == 5
    assert recorder.changed_iters() == [4, 8]
    for iteration in (3, 5, 7):  # accumulating iterations leave the weights alone
        for name, weight in recorder.weights[iteration - 1].items():
            assert torch.equal(weight, recorder.weights[iteration - 2][name])
    assert_masked_weights_zero(recorder)


def test_resume_restores_masks_and_schedule(tmp_path):
    hook = dict(type='SparseTrainingHook', init='snip', growth='random', update_interval=2, prune_rate=0.5)
    runner, full = train(tmp_path, hook, max_iters=6, checkpoint_interval=3)
    checkpoint = torch.load(f'{runner.work_dir}/iter_3.pth', weights_only=True)
    saved = {name: unpack_mask(packed) for name, packed in checkpoint['sparse_training']['masks'].items()}
    assert saved.keys() == full.masks[2].keys()
    assert all(torch.equal(saved[name], full.masks[2][name]) for name in saved)

    _, resumed = train(tmp_path, hook, max_iters=6, resume=True, load_from=f'{runner.work_dir}/iter_3.pth')
    assert all(torch.equal(resumed.start_masks[name], full.masks[2][name]) for name in saved)
    assert resumed.losses == full.losses[3:]
    assert resumed.changed_iters() == [1]  # iteration 4 of the run: the update at optimizer step 4
    for name in saved:
        assert torch.equal(resumed.masks[-1][name], full.masks[-1][name])
        assert torch.equal(resumed.weights[-1][name], full.weights[-1][name])


def test_ema_weights_are_as_sparse_as_the_model(tmp_path):
    hook = dict(type='SparseTrainingHook', init='uniform', update_interval=2, prune_rate=0.5)
    ema = dict(type='EMAHook', momentum=0.2, priority='ABOVE_NORMAL')
    runner, recorder = train(tmp_path, hook, max_iters=5, checkpoint_interval=5, extra_hooks=[ema])
    assert recorder.changed_iters() == [2, 4]
    ema_hook = next(hook for hook in runner.hooks if isinstance(hook, EMAHook))
    averaged = dict(ema_hook.ema_model.module.named_parameters())
    # EMAHook puts the averaged weights into the checkpoint's state_dict
    saved = torch.load(f'{runner.work_dir}/iter_5.pth', weights_only=True)['state_dict']
    for name, mask in recorder.masks[-1].items():
        assert not torch.equal(averaged[name], recorder.weights[-1][name]), 'not an average'
        assert torch.all(averaged[name][~mask] == 0), name
        assert torch.all(saved[name][~mask] == 0), name


def test_amp_bf16_performs_the_same_updates(tmp_path):
    hook = dict(type='SparseTrainingHook', init='uniform', growth='random', update_interval=2, prune_rate=0.5)
    _, fp32 = train(tmp_path, hook, max_iters=5)
    _, bf16 = train(tmp_path, hook, max_iters=5, optim_wrapper='CPUAmpOptimWrapper')
    assert fp32.losses != bf16.losses, 'the bf16 run did not run under autocast'
    assert all(torch.equal(fp32.start_masks[name], bf16.start_masks[name]) for name in fp32.start_masks)
    assert bf16.changed_iters() == fp32.changed_iters() == [2, 4]
    assert_masked_weights_zero(bf16)
    for iteration in (2, 4):
        rate = cosine_prune_rate(iteration, 5, 0.5, 0.005)
        old, new = bf16.masks[iteration - 2], bf16.masks[iteration - 1]
        for name in new:
            assert int(new[name].sum()) == int(old[name].sum())
            num_replace = math.ceil(rate * int(old[name].sum()))
            stepped = bf16.steps[iteration - 1]['weights'][name]
            assert torch.all((old[name] & ~new[name]) <= smallest_active(old[name], stepped, num_replace))


def test_finetune_keeps_checkpoint_zeros(tmp_path):
    torch.manual_seed(1)
    state = ToyClassifier().state_dict()
    generator = torch.Generator().manual_seed(2)
    for name in ('backbone.stem.weight', 'backbone.large_kernel.weight', 'backbone.pointwise.weight'):
        state[name][torch.rand(state[name].shape, generator=generator) < 0.4] = 0
    torch.save(dict(state_dict=state), tmp_path / 'sparse.pth')

    runner, recorder = train(tmp_path, dict(type='SparseFinetuneHook'), max_iters=4, optimizer=ADAMW,
                             load_from=str(tmp_path / 'sparse.pth'), checkpoint_interval=4)
    # small_kernel has no zero: it stays dense; the head is not in the backbone
    assert sorted(recorder.start_masks) == ['backbone.large_kernel.weight', 'backbone.pointwise.weight',
                                            'backbone.stem.weight']
    final = dict(runner.model.named_parameters())
    for name, mask in recorder.start_masks.items():
        assert torch.equal(mask, state[name] != 0)
        assert torch.all(final[name][~mask] == 0)
        assert torch.all(final[name][mask] != state[name][mask])
    assert not torch.equal(final['backbone.small_kernel.weight'], state['backbone.small_kernel.weight'])
    checkpoint = torch.load(f'{runner.work_dir}/iter_4.pth', weights_only=True)
    assert sorted(checkpoint['sparse_finetune']['masks']) == sorted(recorder.start_masks)


def test_bad_arguments_name_allowed_values():
    from mmslak.engine.sparse import SparseTrainingHook
    with pytest.raises(ValueError, match=r"init must be one of \('snip', 'erk', 'uniform'\)"):
        SparseTrainingHook(init='random')
    with pytest.raises(ValueError, match=r"growth must be one of \('random', 'gradient', 'momentum'\)"):
        SparseTrainingHook(growth='grad')
    with pytest.raises(ValueError, match='sparsity must be in'):
        SparseTrainingHook(sparsity=1.0)
    with pytest.raises(ValueError, match="params must be one of"):
        SparseTrainingHook(params='head')


def _distributed_worker(rank, world_size, tmp_path):
    os.environ['LOCAL_RANK'] = str(rank)
    torch_dist.init_process_group('gloo', init_method=f'file://{tmp_path}/rendezvous', rank=rank,
                                  world_size=world_size)
    # DDP keeps the weights equal, but every rank draws from its own seed and computes SNIP on its own shard:
    # only the broadcast of rank 0's SNIP densities and masks makes the masks identical.
    hook = dict(type='SparseTrainingHook', init='snip', update_interval=2, prune_rate=0.5)
    runner, recorder = train(tmp_path, hook, max_iters=5, work_dir=tmp_path / f'rank{rank}', launcher='pytorch',
                             cfg=dict(model_wrapper_cfg=dict(type='CPUDistributedDataParallel')),
                             randomness=dict(seed=0, diff_rank_seed=True))
    assert type(runner.model).__name__ == 'CPUDistributedDataParallel'
    torch.save(dict(masks=recorder.masks, seed=runner.seed), tmp_path / f'rank{rank}.pth')
    torch_dist.destroy_process_group()


@pytest.mark.slow  # two gloo processes: about 12 CPU-seconds
def test_distributed_masks_identical_on_every_rank(tmp_path):
    mp.spawn(_distributed_worker, args=(2, tmp_path), nprocs=2)
    results = [torch.load(tmp_path / f'rank{rank}.pth', weights_only=True) for rank in range(2)]
    assert results[0]['seed'] != results[1]['seed']
    assert len(results[0]['masks']) == 5
    for masks0, masks1 in zip(results[0]['masks'], results[1]['masks']):
        for name in masks0:
            assert torch.equal(masks0[name], masks1[name]), name


@pytest.mark.parametrize('config', sorted(str(path.relative_to(CONFIGS)) for path in CONFIGS.glob('*/*_in1k.py')))
def test_imagenet_config_hooks_build(config):
    """The ImageNet configs' SparseTrainingHook arguments are ones the hook accepts."""
    from mmengine.config import Config
    from mmengine.registry import HOOKS
    hooks = [cfg for cfg in Config.fromfile(CONFIGS / config).custom_hooks if cfg.type == 'SparseTrainingHook']
    assert len(hooks) == 1
    hook = HOOKS.build(hooks[0])
    assert hook.params_scope == 'model' and hook.sparsity == 0.4

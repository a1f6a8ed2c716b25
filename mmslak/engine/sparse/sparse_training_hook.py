"""Dynamic sparse training (SLaK's "S") as an MMEngine hook."""
import math

import torch
from mmengine.dist import broadcast

from mmslak.registry import HOOKS, register_module
from .layer_density import erk_density, snip_density, snip_scores, uniform_density
from .mask_ops import (GROWTH_MODES, cosine_prune_rate, grow, growth_scores, prune_by_magnitude,
                       random_mask)
from .masked_weights_hook import MaskedWeightsHook, unwrap_model

INIT_MODES = ('snip', 'erk', 'uniform')
PRUNE_MODES = ('magnitude', )


@register_module(HOOKS)
class SparseTrainingHook(MaskedWeightsHook):
    """Dynamic sparse training of `SLaK <https://arxiv.org/abs/2207.03620>`_: train with a fixed fraction of
    zero weights, periodically pruning the smallest active weights and regrowing as many elsewhere.

    Works in any MMEngine training (mmpretrain, mmdet, mmseg): ``custom_hooks=[dict(type='SparseTrainingHook',
    ...)]``. What it does, and where it differs from the official SLaK code:

    * ``before_train``: unless masks were restored from the checkpoint, each sparse weight gets a layer
      density from ``init`` and a random mask with exactly that many active weights; masked weights are
      zeroed.
    * After every optimizer step (not every iteration: with gradient accumulation only stepping iterations
      count; a skipped AMP step does not count) masks are re-applied, so pruned weights stay exactly zero.
      The official code skipped this under mixed precision.
    * Every ``update_interval`` optimizer steps (except at the last step) each layer prunes
      ``ceil(rate * active)`` active weights of smallest magnitude and regrows as many inactive ones chosen
      by ``growth``; the active count never changes. ``rate`` follows a cosine from ``prune_rate`` to
      ``final_prune_rate`` over the optimizer steps of the whole run (the official ``CosineDecay``).
      Newly grown weights start at zero with their optimizer state (momentum, Adam moments) reset; the
      official code masked SGD's momentum buffer after every step instead, which would leave momentum growth
      nothing to read.
    * Masks are identical on every process: rank 0's masks are broadcast after every change (random draws
      come from a generator seeded with ``seed``, the Runner's seed by default, which may differ per rank
      with ``diff_rank_seed``; and SNIP sees a different batch on every rank).
    * Masks and the generator state are saved in the checkpoint (the official code saved neither); after
      ``--resume`` the schedule continues from the resumed iteration with the same masks.

    Layer densities (``init``):

    * ``'snip'`` (the official SLaK setting): SNIP connection sensitivity ``|w * dL/dw|`` of every sparse
      weight on one training batch, with the weights re-drawn Xavier-normal in a copy of the model (as the
      official ``SNIP`` function does); the global top ``1 - sparsity`` fraction decides how many weights
      each layer keeps (scores tied at the threshold share the rest), and the kept positions are then drawn
      at random. Rank 0's densities are used.
    * ``'erk'``: Erdős–Rényi-Kernel densities, proportional to ``sum(shape) / prod(shape)``.
    * ``'uniform'``: every layer at ``1 - sparsity``.

    Args:
        sparsity (float): fraction of zero weights, in [0, 1). Defaults to 0.4 (SLaK).
        init (str): layer densities, one of ``'snip'``, ``'erk'``, ``'uniform'``. Defaults to ``'snip'``.
        prune (str): pruning criterion; only ``'magnitude'``.
        growth (str): ``'random'`` (SLaK), ``'gradient'`` (largest ``|grad|`` of the step, RigL) or
            ``'momentum'`` (largest first moment of the optimizer). Defaults to ``'random'``.
        update_interval (int): optimizer steps between mask updates. Defaults to 100 (SLaK-S/B; T uses 2000).
        prune_rate (float): fraction of a layer's active weights replaced at the first update, before the
            cosine decay. Defaults to 0.3 (SLaK-S/B; T uses 0.5).
        final_prune_rate (float): prune rate at the end of training. Defaults to 0.005 (official
            ``CosineDecay`` ``eta_min``).
        params (str): which weights are sparse: ``'backbone'`` (default), ``'model'`` (heads too, the official
            ImageNet setting) or ``'large_kernel'``; see
            :func:`~mmslak.engine.sparse.param_selection.select_sparse_params`.
        large_kernel_min_size (int): shortest "large" kernel side for ``params='large_kernel'``.
        seed (int, optional): seed of the mask generator. Defaults to the Runner's seed.
    """

    checkpoint_key = 'sparse_training'

    def __init__(self,
                 sparsity=0.4,
                 init='snip',
                 prune='magnitude',
                 growth='random',
                 update_interval=100,
                 prune_rate=0.3,
                 final_prune_rate=0.005,
                 params='backbone',
                 large_kernel_min_size=7,
                 seed=None):
        super().__init__(params=params, large_kernel_min_size=large_kernel_min_size)
        if not 0 <= sparsity < 1:
            raise ValueError(f'sparsity must be in [0, 1), got {sparsity}')
        for arg, value, allowed in (('init', init, INIT_MODES), ('prune', prune, PRUNE_MODES),
                                    ('growth', growth, GROWTH_MODES)):
            if value not in allowed:
                raise ValueError(f'{arg} must be one of {allowed}, got {value!r}')
        if not isinstance(update_interval, int) or update_interval < 1:
            raise ValueError(f'update_interval must be a positive int, got {update_interval!r}')
        for arg, value in (('prune_rate', prune_rate), ('final_prune_rate', final_prune_rate)):
            if not 0 <= value <= 1:
                raise ValueError(f'{arg} must be in [0, 1], got {value}')
        self.sparsity = sparsity
        self.init = init
        self.growth = growth
        self.update_interval = update_interval
        # The cosine schedule of the prune rate: from the first update to the end of training.
        self.prune_rate, self.final_prune_rate = prune_rate, final_prune_rate
        self.seed = seed
        self.generator = torch.Generator()
        self.optimizer_steps = 0
        self.total_optimizer_steps = 1

    def before_train(self, runner):
        if self._restored_state is None:
            self.generator.manual_seed(runner.seed if self.seed is None else self.seed)
        super().before_train(runner)
        # The schedule counts optimizer steps; mmengine has no public getter for the accumulation count.
        accumulation = runner.optim_wrapper._accumulative_counts
        self.optimizer_steps = runner.iter // accumulation
        self.total_optimizer_steps = max(1, math.ceil(runner.max_iters / accumulation))

    def create_masks(self, runner):
        shapes = {name: param.shape for name, param in self.sparse_params.items()}
        density = 1 - self.sparsity
        if self.init == 'snip':
            scores = snip_scores(unwrap_model(runner), next(iter(runner.train_dataloader)), list(shapes))
            densities = snip_density(scores, density)
        elif self.init == 'erk':
            densities = erk_density(shapes, density)
        else:
            densities = uniform_density(shapes, density)
        # SNIP sees a different batch on every rank: use rank 0's densities.
        shared = torch.tensor([densities[name] for name in shapes], dtype=torch.float64)
        broadcast(shared)
        return {
            name: random_mask(shape, layer_density, self.generator).to(self.sparse_params[name].device)
            for (name, shape), layer_density in zip(shapes.items(), shared.tolist())
        }

    def after_optimizer_step(self, runner):
        super().after_optimizer_step(runner)
        self.optimizer_steps += 1
        if self.optimizer_steps % self.update_interval == 0 and self.optimizer_steps < self.total_optimizer_steps:
            self.update_masks(runner)

    @torch.no_grad()
    def update_masks(self, runner):
        """Prune by magnitude and regrow as many weights in every layer; log the prune rate."""
        rate = cosine_prune_rate(self.optimizer_steps, self.total_optimizer_steps, self.prune_rate,
                                 self.final_prune_rate)
        optimizer = runner.optim_wrapper.optimizer
        replaced = 0
        for name, mask in self.masks.items():
            param = self.sparse_params[name]
            num_replace = math.ceil(rate * int(mask.count_nonzero()))
            if num_replace == 0 or mask.all():
                continue
            pruned = prune_by_magnitude(mask, param, num_replace)
            scores = growth_scores(self.growth, param, optimizer.state[param], self.generator)
            new_mask = grow(pruned, num_replace, scores)
            grown = new_mask & ~mask
            for value in optimizer.state[param].values():
                if torch.is_tensor(value) and value.shape == param.shape:
                    value.masked_fill_(grown, 0)
            self.masks[name] = new_mask
            replaced += num_replace
        self.broadcast_masks()
        self.apply_masks()
        self.apply_masks_to_averaged_models()
        runner.logger.info(f'{type(self).__name__}: optimizer step {self.optimizer_steps}, prune rate '
                           f'{rate:.4f}, replaced {replaced} weights; {self.density_summary()}')

    def state_dict(self):
        state = super().state_dict()
        state.update(generator_state=self.generator.get_state())
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        missing = sorted(set(self.sparse_params) - set(self.masks))
        if missing:
            raise ValueError(f'{type(self).__name__}: the checkpoint has no mask for {missing}; train with the '
                             f'same params setting as the checkpoint (now params={self.params_scope!r})')
        self.generator.set_state(state['generator_state'])

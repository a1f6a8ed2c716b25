"""The part both sparse hooks share: keep masked weights at exactly zero and carry masks in checkpoints."""
import torch
from mmengine.dist import broadcast, get_world_size
from mmengine.hooks import EMAHook, Hook
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper

from .mask_ops import pack_mask, unpack_mask
from .param_selection import check_param_scope, select_sparse_params


def unwrap_model(runner):
    """The Runner's model without its DistributedDataParallel (or other) wrapper."""
    return runner.model.module if is_model_wrapper(runner.model) else runner.model


class MaskedWeightsHook(Hook):
    """Base of :class:`SparseTrainingHook` and :class:`SparseFinetuneHook`.

    Masks are applied right after every optimizer step (a post-step hook on the torch optimizer), so pruned
    weights stay exactly zero whatever the optimizer does (momentum, weight decay), the forward pass always
    sees sparse weights, and with gradient accumulation nothing happens on iterations that do not step.
    Gradients are left dense: autograd computes them for masked weights too, which gradient and momentum
    growth need.

    An :class:`~mmengine.hooks.EMAHook`'s averaged model is masked too whenever the masks change; in between
    its masked weights stay zero by themselves (an average of zeros), so the checkpoints, whose ``state_dict``
    EMAHook fills with the averaged weights, are exactly as sparse as the trained model.

    Masks are stored in the checkpoint under :attr:`checkpoint_key` as packed bits (plain tensors, lists and
    ints, loadable with ``weights_only=True``) and restored by ``--resume`` or ``load_from``.

    Subclasses implement :meth:`create_masks` and may extend :meth:`after_optimizer_step`,
    :meth:`state_dict` and :meth:`load_state_dict`.

    Args:
        params (str): which weights are masked, see
            :func:`~mmslak.engine.sparse.param_selection.select_sparse_params`. Defaults to ``'backbone'``.
        large_kernel_min_size (int): shortest "large" kernel side for ``params='large_kernel'``.
    """

    checkpoint_key = None

    def __init__(self, params='backbone', large_kernel_min_size=7):
        self.params_scope = params
        self.large_kernel_min_size = large_kernel_min_size
        check_param_scope(params)
        self.masks = {}
        self.sparse_params = {}
        self.averaged_params = []
        self._restored_state = None
        self._step_hook_handle = None

    def create_masks(self, runner):
        """Return ``{name: bool mask}`` for a run that did not restore masks from a checkpoint."""
        raise NotImplementedError

    def after_optimizer_step(self, runner):
        """Called after every optimizer step; zeroes the masked weights."""
        self.apply_masks()

    @torch.no_grad()
    def apply_masks(self):
        for name, mask in self.masks.items():
            self.sparse_params[name].mul_(mask)

    @torch.no_grad()
    def apply_masks_to_averaged_models(self):
        for params in self.averaged_params:
            for name, mask in self.masks.items():
                params[name].mul_(mask)

    def broadcast_masks(self):
        """Make every process use rank 0's masks (one broadcast of all masks as bytes)."""
        if get_world_size() == 1 or not self.masks:
            return
        flat = torch.cat([mask.flatten().to(torch.uint8) for mask in self.masks.values()])
        broadcast(flat)
        offset = 0
        for name, mask in self.masks.items():
            self.masks[name] = flat[offset:offset + mask.numel()].view_as(mask).bool()
            offset += mask.numel()

    def before_train(self, runner):
        if not isinstance(runner.optim_wrapper, OptimWrapper):
            raise TypeError(f'{type(self).__name__} supports a single OptimWrapper, got '
                            f'{type(runner.optim_wrapper).__name__}')
        model = unwrap_model(runner)
        self.sparse_params = dict(select_sparse_params(model, self.params_scope, self.large_kernel_min_size))
        if not self.sparse_params:
            raise ValueError(f'{type(self).__name__}: params={self.params_scope!r} selects no trainable weight '
                             f'of {type(model).__name__}')
        if self._restored_state is not None:
            self.load_state_dict(self._restored_state)
            source = 'restored from the checkpoint'
        else:
            self.masks = self.create_masks(runner)
            source = 'created'
        self.broadcast_masks()
        self.apply_masks()
        self.averaged_params = [dict(hook.ema_model.module.named_parameters()) for hook in runner.hooks
                                if isinstance(hook, EMAHook)]
        self.apply_masks_to_averaged_models()
        if self._step_hook_handle is not None:
            self._step_hook_handle.remove()
        self._step_hook_handle = runner.optim_wrapper.optimizer.register_step_post_hook(
            lambda optimizer, args, kwargs: self.after_optimizer_step(runner))
        runner.logger.info(f'{type(self).__name__}: masks {source}; {self.density_summary()}')

    def after_train(self, runner):
        if self._step_hook_handle is not None:
            self._step_hook_handle.remove()
            self._step_hook_handle = None

    def density_summary(self):
        """One line: masked layers, active and total weights, overall density."""
        active = sum(int(mask.count_nonzero()) for mask in self.masks.values())
        total = sum(mask.numel() for mask in self.masks.values())
        return f'{len(self.masks)} masked weights, {active}/{total} active (density {active / max(total, 1):.4f})'

    def state_dict(self):
        """What goes into the checkpoint: only tensors, dicts, lists, ints and floats."""
        return dict(masks={name: pack_mask(mask) for name, mask in self.masks.items()})

    def load_state_dict(self, state):
        masks = {}
        for name, packed in state['masks'].items():
            if name not in self.sparse_params:
                raise ValueError(f'{type(self).__name__}: the checkpoint has a mask for {name!r}, which is not '
                                 f'among the selected weights (params={self.params_scope!r}); train with the '
                                 'same params setting as the checkpoint')
            param = self.sparse_params[name]
            if list(param.shape) != packed['shape']:
                raise ValueError(f'{type(self).__name__}: mask of {name!r} in the checkpoint has shape '
                                 f'{packed["shape"]}, the weight has {list(param.shape)}')
            masks[name] = unpack_mask(packed).to(param.device)
        self.masks = masks

    def before_save_checkpoint(self, runner, checkpoint):
        checkpoint[self.checkpoint_key] = self.state_dict()

    def after_load_checkpoint(self, runner, checkpoint):
        self._restored_state = checkpoint.get(self.checkpoint_key)

"""Sparse fine-tuning: keep the zeros of a loaded sparse checkpoint at zero."""
from mmslak.registry import HOOKS, register_module
from .masked_weights_hook import MaskedWeightsHook


@register_module(HOOKS)
class SparseFinetuneHook(MaskedWeightsHook):
    """Fine-tune a sparsely trained network (e.g. a SLaK ImageNet checkpoint) without densifying it.

    At the start of training every selected weight that contains zeros gets the mask ``weight != 0``, so the
    weights must already be loaded (``load_from`` or the backbone's ``init_cfg=dict(type='Pretrained')``, both
    happen before ``before_train``). The masks are re-applied after every optimizer step and saved in the
    checkpoint. This is what the official SLaK downstream code does (``mask = weight != 0``, re-applied
    before each forward). Weights without any zero (e.g. a freshly initialised head) stay dense.

    Args:
        params (str): which weights may be masked: ``'backbone'`` (default), ``'model'`` or
            ``'large_kernel'``, see :func:`~mmslak.engine.sparse.param_selection.select_sparse_params`.
        large_kernel_min_size (int): shortest "large" kernel side for ``params='large_kernel'``.
    """

    checkpoint_key = 'sparse_finetune'

    def create_masks(self, runner):
        masks = {name: param.detach() != 0 for name, param in self.sparse_params.items()}
        masks = {name: mask for name, mask in masks.items() if not mask.all()}
        if not masks:
            runner.logger.warning(f'{type(self).__name__}: none of the {len(self.sparse_params)} selected weights '
                                  'has a zero; was the sparse checkpoint loaded? Training stays dense.')
        return masks

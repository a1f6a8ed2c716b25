"""SLaK backbone: `More ConvNets in the 2020s: Scaling up Kernels Beyond 51x51 using Sparsity
<https://arxiv.org/abs/2207.03620>`_ (ICLR 2023)."""
from mmslak.registry import MODELS, register_module

from ..layers import DecomposedLargeKernelConv
from .large_kernel_convnext import LargeKernelConvNeXt


@register_module(MODELS)
class SLaK(LargeKernelConvNeXt):
    """SLaK: ConvNeXt with 1.3x wider stages and sparse-trained decomposed large kernels.

    Every block's ``large_kernel`` is a :class:`~mmslak.models.layers.DecomposedLargeKernelConv`: with
    ``decompose=True`` three BatchNorm'd depthwise branches of kernels (K, N), (N, K) and (N, N); with
    ``decompose=False`` one K x K branch and the N x N one (RepLKNet style). Parameter names match the
    official release, so its checkpoints load after :func:`mmslak.models.convert_slak_state_dict`. The
    same class serves classification (``gap_before_final_norm=True``, ``out_indices=-1``; the official
    final norm is ``norm3``), detection and segmentation (``gap_before_final_norm=False``,
    ``out_indices=(0, 1, 2, 3)``).

    Args:
        arch (str | dict): ``'tiny'``, ``'small'``, ``'base'`` or a dict with ``depths`` and
            ``widths`` (ConvNeXt widths, multiplied by ``width_factor``). Defaults to ``'tiny'``.
        kernel_size (Sequence[int]): long kernel side K per stage. Defaults to (51, 49, 47, 13).
        short_kernel (int): short kernel side N. Defaults to 5.
        width_factor (float): width multiplier. Defaults to 1.3 (T and S: 124, 249, 499, 998).
        decompose (bool): (K, N) + (N, K) branches instead of K x K. Defaults to True.
        branch_bn (bool): BatchNorm after each branch. Defaults to True.
        deploy (bool): build the merged inference form (to load deploy checkpoints). Defaults to False.
        **kwargs: the options of :class:`LargeKernelConvNeXt` (``drop_path_rate``,
            ``layer_scale_init_value``, ``out_indices``, ``frozen_stages``, ``norm_eval``, ``with_cp``,
            ``gap_before_final_norm``, ``channels_last``, ``init_cfg``, ...).

    Example:
        >>> import torch
        >>> from mmslak.models import SLaK
        >>> model = SLaK(arch=dict(depths=[1, 1, 1, 1], widths=[8, 16, 24, 32]),
        ...              kernel_size=(13, 11, 9, 7), width_factor=1.0).eval()
        >>> [tuple(out.shape) for out in model(torch.rand(1, 3, 64, 64))]
        [(1, 32)]
    """
    def __init__(self,
                 arch='tiny',
                 kernel_size=(51, 49, 47, 13),
                 short_kernel=5,
                 width_factor=1.3,
                 decompose=True,
                 branch_bn=True,
                 deploy=False,
                 **kwargs):
        self.short_kernel = short_kernel
        self.decompose = decompose
        self.branch_bn = branch_bn
        self.deploy = deploy
        super().__init__(arch, kernel_size, width_factor=width_factor, **kwargs)

    def make_large_kernel(self, stage_index, dim, kernel_size, stage_shared):
        return DecomposedLargeKernelConv(
            dim,
            kernel_size,
            short_kernel=self.short_kernel,
            decompose=self.decompose,
            branch_bn=self.branch_bn,
            deploy=self.deploy)

    def switch_to_deploy(self):
        super().switch_to_deploy()
        self.deploy = True
        return self

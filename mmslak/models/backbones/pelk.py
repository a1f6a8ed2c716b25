"""PeLK backbone: `Parameter-efficient Large Kernel ConvNets with Peripheral Convolution
<https://arxiv.org/abs/2403.07589>`_ (CVPR 2024).

The paper publishes no code; the choices it leaves open are arguments of :class:`PeLK` and of
:class:`~mmslak.models.layers.PeripheralConv2d`, documented with our defaults in
``docs/pelk_choices.md``.
"""
from mmslak.registry import MODELS, register_module

from ..layers import PeripheralConv2d, PeripheralPositionalEmbedding, peripheral_conv_channels
from .large_kernel_convnext import LargeKernelConvNeXt


@register_module(MODELS)
class PeLK(LargeKernelConvNeXt):
    """PeLK: the SLaK skeleton (ConvNeXt, 1.3x wider) with partial peripheral convolutions.

    Every block's ``large_kernel`` is a :class:`~mmslak.models.layers.PeripheralConv2d`. The kernel-wise
    positional embedding of a stage is one parameter, ``stages.{s}.shared.pos_embed`` (C_conv, K, K),
    shared by the stage's blocks (``share_pos_embed=True``, the paper's setting).

    Grids: a stage of kernel size K uses ``peripheral_grid(K, center_size)`` (focus and blur) unless
    ``K <= dense_max_kernel``: then its kernel is dense (all cells of width 1). Our default
    ``dense_max_kernel=13`` makes the last stage (13 x 13 on a 7 x 7 map at 224^2, where the kernel
    already spans the whole map and sharing would save 0.2% of the parameters) dense. ``grids`` overrides
    any stage with an explicit list of cell widths.

    Args:
        arch (str | dict): ``'tiny'``, ``'small'``, ``'base'``, ``'base-101'`` or a dict with ``depths``
            and ``widths`` (ConvNeXt widths, multiplied by ``width_factor``) and optionally
            ``kernel_size`` and ``center_size``. Defaults to ``'tiny'``.
        kernel_size (Sequence[int], optional): K per stage; defaults to the arch's: (51, 49, 47, 13),
            and (101, 69, 67, 13) for ``'base-101'``.
        center_size (int, optional): width-1 centre cells of the grids; defaults to the arch's: 5, and
            7 for ``'base-101'``.
        growth (int): width ratio of neighbouring peripheral cells. Defaults to 2.
        dense_max_kernel (int): stages with K up to this use a dense kernel. Defaults to 13.
        grids (Sequence[Sequence[int] | None], optional): per-stage explicit grids (None entries use
            the rule above).
        pos_embed (str | None): ``'kernel'``, ``'input'`` or None, see
            :class:`~mmslak.models.layers.PeripheralConv2d`. Defaults to ``'kernel'``.
        share_pos_embed (bool): one embedding per stage instead of one per block. Defaults to True.
        conv_ratio (float): fraction of channels convolved. Defaults to 3/8.
        short_kernel (int | None): side N of the parallel N x N branch (clipped to K), SLaK's name and
            default; None turns the branch off. Defaults to 5.
        width_factor (float): width multiplier. Defaults to 1.3 (T and S: 124, 249, 499, 998).
        deploy (bool): build the fused inference form of :meth:`switch_to_deploy` (to load deployed
            checkpoints). Defaults to False.
        init_cfg (dict | list[dict], optional): SLaK's by default (truncated normal, std 0.02, for every
            conv and Linear weight), applied to the peripheral parameter kernels too.
        **kwargs: the options of :class:`LargeKernelConvNeXt` (``drop_path_rate``,
            ``layer_scale_init_value``, ``out_indices``, ``frozen_stages``, ``norm_eval``, ``with_cp``,
            ``gap_before_final_norm``, ``channels_last``, ...).

    Example:
        >>> from mmslak.models import PeLK
        >>> model = PeLK(arch='tiny')
        >>> model.stages[0][0].large_kernel.grid  # 13 x 13 parameters for the 51 x 51 kernel
        [9, 8, 4, 2, 1, 1, 1, 1, 1, 2, 4, 8, 9]
        >>> tuple(model.stages[0].shared.pos_embed.shape)  # round(3/8 * 124) channels
        (46, 51, 51)
    """
    # ConvNeXt's T, S and B (LargeKernelConvNeXt.arch_settings) and PeLK-B with the 101 kernels.
    arch_settings = {
        **LargeKernelConvNeXt.arch_settings,
        'base-101': {**LargeKernelConvNeXt.arch_settings['base'],
                     'kernel_size': [101, 69, 67, 13], 'center_size': 7},
    }
    default_kernel_size = (51, 49, 47, 13)
    default_center_size = 5

    def __init__(self,
                 arch='tiny',
                 kernel_size=None,
                 center_size=None,
                 growth=2,
                 dense_max_kernel=13,
                 grids=None,
                 pos_embed='kernel',
                 share_pos_embed=True,
                 conv_ratio=3 / 8,
                 short_kernel=5,
                 width_factor=1.3,
                 deploy=False,
                 init_cfg=(dict(type='TruncNormal',
                                layer=['Conv2d', 'Linear', 'LargeKernelDepthwiseConv2d', 'PeripheralConv2d'],
                                std=.02, bias=0.),
                           dict(type='Constant', layer=['LayerNorm', 'LayerNorm2d'], val=1., bias=0.)),
                 **kwargs):
        settings = arch if isinstance(arch, dict) else self.arch_settings.get(arch, {})
        if kernel_size is None:
            kernel_size = settings.get('kernel_size', self.default_kernel_size)
        if grids is not None and len(grids) != self.num_stages:
            raise ValueError(f'grids needs one entry (a grid or None) per stage ({self.num_stages}), '
                             f'got {len(grids)}')
        self.center_size = center_size if center_size is not None else settings.get(
            'center_size', self.default_center_size)
        self.growth = growth
        self.dense_max_kernel = dense_max_kernel
        self.grids = list(grids) if grids is not None else [None] * self.num_stages
        self.pos_embed = pos_embed
        self.share_pos_embed = share_pos_embed
        self.conv_ratio = conv_ratio
        self.short_kernel = short_kernel
        self.deploy = deploy
        super().__init__(arch, kernel_size, width_factor=width_factor, init_cfg=init_cfg, **kwargs)

    def make_stage_shared(self, stage_index, dim, kernel_size):
        if self.pos_embed is None or not self.share_pos_embed or self.deploy:
            return None
        return PeripheralPositionalEmbedding(peripheral_conv_channels(dim, self.conv_ratio), kernel_size)

    def make_large_kernel(self, stage_index, dim, kernel_size, stage_shared):
        dense = kernel_size <= self.dense_max_kernel
        return PeripheralConv2d(
            dim,
            kernel_size,
            center_size=kernel_size if dense else self.center_size,
            growth=self.growth,
            pos_embed=self.pos_embed,
            conv_ratio=self.conv_ratio,
            small_kernel=None if self.short_kernel is None else min(self.short_kernel, kernel_size),
            grid=self.grids[stage_index],
            shared_pos_embed=stage_shared,
            deploy=self.deploy)

    def switch_to_deploy(self):
        """Fuse every peripheral conv (see :meth:`PeripheralConv2d.switch_to_deploy`) and drop the
        stages' embeddings, which the fused kernels no longer read."""
        super().switch_to_deploy()
        for stage in self.stages:
            stage.shared = None
        self.deploy = True
        return self

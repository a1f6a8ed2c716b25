"""The ConvNeXt skeleton shared by SLaK and PeLK: Block, stage and the base backbone.

SLaK and PeLK are ConvNeXt (`A ConvNet for the 2020s <https://arxiv.org/abs/2201.03545>`_) with the 7x7
depthwise convolution of every block replaced by a large-kernel token mixer. Only that mixer differs
between them, so a backbone is a subclass of :class:`LargeKernelConvNeXt` that provides it.

Extension points for subclasses:

* :meth:`LargeKernelConvNeXt.make_large_kernel` (required): build the token mixer of one block; it
  becomes the block's ``large_kernel`` child (a C -> C module keeping the spatial size).
* :meth:`LargeKernelConvNeXt.make_stage_shared` (optional): build a module shared by all blocks of a
  stage (PeLK's kernel-wise positional embedding). The stage owns it as ``stages.{s}.shared`` so its
  parameters are stored once; each mixer receives it in ``make_large_kernel`` and must keep it
  without registering it as a child (e.g. in a tuple attribute), or its parameters would be saved once
  per block.
* ``arch_settings``: the named architectures (``depths`` and ``widths`` before ``width_factor``);
  ConvNeXt's T, S and B here, which SLaK and PeLK share. A subclass adds its own entries.
* Mixers may implement ``switch_to_deploy()``; :meth:`LargeKernelConvNeXt.switch_to_deploy` calls it on
  all of them.

Subclasses store the options their mixer needs on ``self`` *before* calling ``super().__init__``,
because the base builds the stages in its constructor.

Parameter names are those of the official SLaK release: ``downsample_layers.{0..3}`` (stem conv + LN;
LN + conv), ``stages.{s}.{b}.{large_kernel,norm,pwconv1,pwconv2,gamma}``, plus ``norm{i}`` for each
returned stage (the classifier's final norm is ``norm3``). :meth:`LargeKernelConvNeXt.get_layer_depth`
gives each of them its depth for layer-wise learning-rate decay, as mmpretrain's ConvNeXt does.
"""
import inspect

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn.bricks import DropPath
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm

from ..deploy import switch_to_deploy
from ..layers import LayerNorm2d


class LargeKernelBlock(BaseModule):
    """ConvNeXt block around a large-kernel token mixer.

    ``x + drop_path(gamma * pwconv2(GELU(pwconv1(LayerNorm(large_kernel(x))))))``, the LayerNorm and the
    two Linear layers acting on the channels of every position (NHWC), as in the official code.

    Args:
        large_kernel (nn.Module): the token mixer (C -> C, same spatial size).
        dim (int): channels C.
        mlp_ratio (float): hidden width of the MLP relative to C. Defaults to 4.
        drop_path_rate (float): stochastic depth rate of this block. Defaults to 0.
        layer_scale_init_value (float): initial value of the per-channel scale ``gamma``; 0 or less
            disables it. Defaults to 1e-6.
        with_cp (bool): recompute the block in backward (gradient checkpointing) to save memory.
            Defaults to False.
    """

    def __init__(self, large_kernel, dim, mlp_ratio=4., drop_path_rate=0., layer_scale_init_value=1e-6,
                 with_cp=False, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.large_kernel = large_kernel
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(mlp_ratio * dim)
        self.pwconv1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(hidden, dim)
        self.gamma = (
            nn.Parameter(torch.full((dim, ), float(layer_scale_init_value)))
            if layer_scale_init_value > 0 else None)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.with_cp = with_cp

    def _inner_forward(self, x):
        shortcut = x
        x = self.large_kernel(x).permute(0, 2, 3, 1)
        x = self.pwconv2(self.act(self.pwconv1(self.norm(x))))
        if self.gamma is not None:
            x = x * self.gamma
        return shortcut + self.drop_path(x.permute(0, 3, 1, 2))

    def forward(self, x):
        if self.with_cp and self.training and x.requires_grad:
            return cp.checkpoint(self._inner_forward, x, use_reentrant=False)
        return self._inner_forward(x)


class LargeKernelStage(BaseModule):
    """The blocks of one stage (children ``'0'``, ``'1'``, ...) and the module they share, if any.

    Args:
        blocks (list[nn.Module]): the blocks, applied in order.
        shared (nn.Module, optional): state shared by the blocks' mixers, stored as ``shared``.
    """

    def __init__(self, blocks, shared=None, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        for index, block in enumerate(blocks):
            self.add_module(str(index), block)
        self.depth = len(blocks)
        self.shared = shared

    def __len__(self):
        return self.depth

    def __getitem__(self, index):
        return self._modules[str(range(self.depth)[index])]

    def __iter__(self):
        return (self[index] for index in range(self.depth))

    def forward(self, x):
        for block in self:
            x = block(x)
        return x


class LargeKernelConvNeXt(BaseModule):
    """Base backbone: a four-stage ConvNeXt whose blocks use a large-kernel token mixer.

    See the module docstring for how subclasses provide the mixer. The forward returns a tuple with one
    output per entry of ``out_indices``: the normalised feature map of that stage (N, C, H, W), or, with
    ``gap_before_final_norm=True``, the normalised global average (N, C), which is what the official
    classifier feeds its head.

    Args:
        arch (str | dict): a key of ``arch_settings`` or a dict with ``depths`` and ``widths`` (four
            entries each; widths before ``width_factor``).
        kernel_size (Sequence[int]): the large kernel size of each of the four stages.
        width_factor (float): stage widths are ``int(width * width_factor)``. Defaults to 1.
        in_channels (int): input channels. Defaults to 3.
        stem_patch_size (int): kernel and stride of the stem conv. Defaults to 4.
        mlp_ratio (float): MLP hidden width relative to the block width. Defaults to 4.
        drop_path_rate (float): stochastic depth rate, growing linearly from 0 over all blocks to this.
            Defaults to 0.
        layer_scale_init_value (float): initial layer scale; 0 or less disables it. Defaults to 1e-6.
        out_indices (int | Sequence[int]): stages to return (negative counts from the end).
            Defaults to -1.
        frozen_stages (int): freeze the downsampling layer and blocks of the first this many stages.
            Defaults to 0.
        gap_before_final_norm (bool): average-pool before the output norms (classification). Defaults
            to True.
        norm_eval (bool): keep every BatchNorm in eval mode during training. Defaults to False.
        with_cp (bool): gradient checkpointing in every block. Defaults to False.
        channels_last (bool): run the stages in the channels_last memory format (NHWC), which the
            kernels of :mod:`mmslak.ops` and the per-position Linear layers prefer on CPUs. Returned
            feature maps are contiguous either way; the results are the same. Defaults to True.
        init_cfg (dict | list[dict], optional): initialisation config.
    """
    arch_settings = {
        'tiny': {'depths': [3, 3, 9, 3], 'widths': [96, 192, 384, 768]},
        'small': {'depths': [3, 3, 27, 3], 'widths': [96, 192, 384, 768]},
        'base': {'depths': [3, 3, 27, 3], 'widths': [128, 256, 512, 1024]},
    }
    num_stages = 4

    def __init__(self,
                 arch,
                 kernel_size,
                 width_factor=1.,
                 in_channels=3,
                 stem_patch_size=4,
                 mlp_ratio=4.,
                 drop_path_rate=0.,
                 layer_scale_init_value=1e-6,
                 out_indices=-1,
                 frozen_stages=0,
                 gap_before_final_norm=True,
                 norm_eval=False,
                 with_cp=False,
                 channels_last=True,
                 init_cfg=(dict(type='TruncNormal', layer=['Conv2d', 'Linear', 'LargeKernelDepthwiseConv2d'],
                                std=.02, bias=0.),
                           dict(type='Constant', layer=['LayerNorm', 'LayerNorm2d'], val=1., bias=0.))):
        super().__init__(init_cfg=list(init_cfg) if isinstance(init_cfg, tuple) else init_cfg)
        depths, _ = self._parse_arch(arch)
        kernel_size = tuple(kernel_size)
        if len(kernel_size) != self.num_stages:
            raise ValueError(f'kernel_size needs one entry per stage ({self.num_stages}), got {kernel_size}')
        self.depths = depths
        self.widths = self.arch_widths(arch, width_factor)
        self.kernel_size = kernel_size
        self.out_indices = self._parse_out_indices(out_indices)
        if not 0 <= frozen_stages <= self.num_stages:
            raise ValueError(f'frozen_stages must be in 0..{self.num_stages}, got {frozen_stages}')
        self.frozen_stages = frozen_stages
        self.gap_before_final_norm = gap_before_final_norm
        self.norm_eval = norm_eval
        self.channels_last = channels_last

        widths = self.widths
        self.downsample_layers = nn.ModuleList([
            nn.Sequential(
                nn.Conv2d(in_channels, widths[0], kernel_size=stem_patch_size, stride=stem_patch_size),
                LayerNorm2d(widths[0]))
        ])
        for i in range(1, self.num_stages):
            self.downsample_layers.append(
                nn.Sequential(LayerNorm2d(widths[i - 1]), nn.Conv2d(widths[i - 1], widths[i], 2, stride=2)))

        num_blocks = sum(depths)
        rates = [drop_path_rate * i / max(num_blocks - 1, 1) for i in range(num_blocks)]
        self.stages = nn.ModuleList()
        for i, (depth, dim, size) in enumerate(zip(depths, widths, kernel_size)):
            shared = self.make_stage_shared(i, dim, size)
            first = sum(depths[:i])
            blocks = [
                LargeKernelBlock(
                    self.make_large_kernel(i, dim, size, shared),
                    dim,
                    mlp_ratio=mlp_ratio,
                    drop_path_rate=rates[first + j],
                    layer_scale_init_value=layer_scale_init_value,
                    with_cp=with_cp) for j in range(depth)
            ]
            self.stages.append(LargeKernelStage(blocks, shared))

        for i in self.out_indices:
            self.add_module(f'norm{i}', LayerNorm2d(widths[i]))
        self._freeze_stages()

    @classmethod
    def arch_widths(cls, arch, width_factor=None):
        """The widths of the stages that the backbone builds for ``arch``.

        Configs take the input channels of a neck or decode head from here instead of typing them.

        Args:
            arch (str | dict): as for the constructor.
            width_factor (float, optional): as for the constructor. Defaults to the constructor's
                default (1.3 for SLaK and PeLK).

        Returns:
            list[int]: the channels of each stage, ``int(width * width_factor)``.
        """
        if width_factor is None:
            width_factor = inspect.signature(cls).parameters['width_factor'].default
        _, widths = cls._parse_arch(arch)
        return [int(width * width_factor) for width in widths]

    @classmethod
    def _parse_arch(cls, arch):
        if isinstance(arch, str):
            if arch not in cls.arch_settings:
                raise ValueError(f'unknown arch {arch!r} for {cls.__name__}; choose one of '
                                 f'{sorted(cls.arch_settings)} or pass a dict with depths and widths')
            arch = cls.arch_settings[arch]
        if not isinstance(arch, dict) or not {'depths', 'widths'} <= set(arch):
            raise ValueError(f'arch must be a name or a dict with keys depths and widths, got {arch!r}')
        depths, widths = list(arch['depths']), list(arch['widths'])
        if len(depths) != cls.num_stages or len(widths) != cls.num_stages:
            raise ValueError(f'arch needs {cls.num_stages} depths and widths, got depths={depths}, '
                             f'widths={widths}')
        return depths, widths

    def _parse_out_indices(self, out_indices):
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        parsed = []
        for index in out_indices:
            if not -self.num_stages <= index < self.num_stages:
                raise ValueError(f'out_indices must be in {-self.num_stages}..{self.num_stages - 1}, '
                                 f'got {index}')
            parsed.append(index % self.num_stages)
        return sorted(set(parsed))

    def make_stage_shared(self, stage_index, dim, kernel_size):
        """Module shared by all blocks of a stage (stored as ``stages.{s}.shared``); None by default."""
        return None

    def make_large_kernel(self, stage_index, dim, kernel_size, stage_shared):
        """Build the token mixer of one block of stage ``stage_index`` (width ``dim``)."""
        raise NotImplementedError(f'{type(self).__name__} must implement make_large_kernel')

    def forward(self, x):
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(self.downsample_layers[i](x))
            if i in self.out_indices:
                norm = getattr(self, f'norm{i}')
                if self.gap_before_final_norm:
                    outs.append(norm(x.mean([-2, -1], keepdim=True)).flatten(1))
                else:
                    outs.append(norm(x).contiguous())
        return tuple(outs)

    def _freeze_stages(self):
        for i in range(self.frozen_stages):
            for module in (self.downsample_layers[i], self.stages[i]):
                module.eval()
                for param in module.parameters():
                    param.requires_grad = False

    def train(self, mode=True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    def get_layer_depth(self, param_name, prefix=''):
        """Layer id of a parameter for layer-wise learning-rate decay: ConvNeXt's rule.

        The rule of mmpretrain's ``ConvNeXt.get_layer_depth`` and of the official ConvNeXt and SLaK
        downstream code: the stem gets 0; stage 0 gets 1; stage 1 and the downsampling before it 2;
        stage 2 gets 3 plus one per three blocks, the downsampling before it 3; stage 3 and the
        downsampling before it the last backbone id, ``4 + (depths[2] - 1) // 3`` (6 for T, 12 for S
        and B, the ``num_layers`` that ConvNeXt configs type by hand); the output norms, and every
        parameter outside ``prefix`` (neck, heads), one more. A parameter of a stage that belongs to no
        block (PeLK's shared positional embedding) gets the id of the stage's first block, the earliest
        that uses it.

        Args:
            param_name (str): the parameter's name, e.g. ``'backbone.stages.2.4.pwconv1.weight'``.
            prefix (str): the backbone's prefix in the names (``'backbone.'`` for names taken from a
                classifier, detector or segmentor). Defaults to ''.

        Returns:
            tuple[int, int]: the layer id and the number of layer ids, as mmpretrain's
            ``LearningRateDecayOptimWrapperConstructor`` expects (the heads get
            ``num_layers - 1``).
        """
        last_backbone_id = 4 + (self.depths[2] - 1) // 3
        kind, stage, block = self._locate(param_name, prefix)
        if kind == 'downsample':
            layer_id = (0, 2, 3, last_backbone_id)[stage]
        elif kind == 'stage':
            layer_id = (1, 2, 3 + block // 3, last_backbone_id)[stage]
        else:
            layer_id = last_backbone_id + 1
        return layer_id, last_backbone_id + 2

    def get_stage_depth(self, param_name, prefix=''):
        """Layer id of a parameter for stage-wise learning-rate decay: ConvNeXt's rule.

        The rule of mmseg's and mmdet's ``get_stage_id_for_convnext``: the stem and the downsampling
        layers get 0, stage ``s`` gets ``s + 1``, everything else (output norms, neck, heads) the same
        id as in :meth:`get_layer_depth`, which also gives the number of ids. So the heads keep the
        base learning rate and stage 3 of SLaK-T, 3 ids below them, gets ``decay_rate ** 3``, as with
        the official configs' ``num_layers=6``.

        Args:
            param_name (str): the parameter's name.
            prefix (str): the backbone's prefix in the names. Defaults to ''.

        Returns:
            tuple[int, int]: the layer id and the number of layer ids.
        """
        layer_id, num_layers = self.get_layer_depth(param_name, prefix)
        kind, stage, _ = self._locate(param_name, prefix)
        if kind == 'downsample':
            layer_id = 0
        elif kind == 'stage':
            layer_id = stage + 1
        return layer_id, num_layers

    @staticmethod
    def _locate(param_name, prefix):
        """('downsample', stage, None), ('stage', stage, block) or ('other', None, None)."""
        if not param_name.startswith(prefix):
            return 'other', None, None
        parts = param_name[len(prefix):].split('.')
        if parts[0] == 'downsample_layers':
            return 'downsample', int(parts[1]), None
        if parts[0] == 'stages':
            # A stage-level parameter (stages.{s}.shared...) counts as its stage's first block.
            return 'stage', int(parts[1]), int(parts[2]) if parts[2].isdigit() else 0
        return 'other', None, None

    def switch_to_deploy(self):
        """Merge every mixer into its inference form (see :func:`mmslak.models.switch_to_deploy`)."""
        switch_to_deploy(self)
        return self

"""Peripheral convolution of PeLK: a depthwise large kernel whose weights are shared over a
focus-and-blur grid.

PeLK: `Parameter-efficient Large Kernel ConvNets with Peripheral Convolution
<https://arxiv.org/abs/2403.07589>`_ (CVPR 2024). The paper publishes no code; every choice it leaves
open is an argument here, with our default and its reason in the docstrings and in
``docs/pelk_choices.md``.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmslak.ops import depthwise_conv2d, expand_peripheral_kernel, peripheral_depthwise_conv2d

from .decomposed_conv import DepthwiseConvBN, fold_batch_norm, pad_kernel

POS_EMBED_MODES = ('kernel', 'input', None)


def peripheral_grid(kernel_size, center_size=5, growth=2):
    """Cell widths of PeLK's focus-and-blur sharing grid, applied to both axes of the kernel.

    The centre is ``center_size`` cells of width 1; outwards, on both sides, cells are
    ``growth``, ``growth**2``, ``growth**3``, ... wide, and the outermost cell is clipped so that the
    widths sum to ``kernel_size``. This reproduces every grid the paper prints:

    >>> peripheral_grid(31)
    [7, 4, 2, 1, 1, 1, 1, 1, 2, 4, 7]
    >>> peripheral_grid(51)
    [9, 8, 4, 2, 1, 1, 1, 1, 1, 2, 4, 8, 9]
    >>> peripheral_grid(101, center_size=7)
    [17, 16, 8, 4, 2, 1, 1, 1, 1, 1, 1, 1, 2, 4, 8, 16, 17]

    The clipped outermost cell can be narrower than its inner neighbour, down to width 1 (``69``
    with centre 7 ends in ``..., 16, 1``); we keep the literal rule rather than merging such a cell
    inwards because it is the one rule consistent with all printed grids. ``center_size ==
    kernel_size`` gives the dense grid (all ones).

    Args:
        kernel_size (int): K, odd.
        center_size (int): number of width-1 cells in the centre, odd, at most K. Default: 5.
        growth (int): ratio between the widths of neighbouring peripheral cells, >= 2. Default: 2.

    Returns:
        list[int]: cell widths, symmetric, summing to ``kernel_size``.
    """
    for name, value in (('kernel_size', kernel_size), ('center_size', center_size), ('growth', growth)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f'{name} must be an int, got {value!r}')
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f'kernel_size must be odd and positive, got {kernel_size}')
    if center_size < 1 or center_size % 2 == 0 or center_size > kernel_size:
        raise ValueError(f'center_size must be odd and in 1..kernel_size={kernel_size}, got {center_size}')
    if growth < 2:
        raise ValueError(f'growth must be >= 2 (cells must widen away from the centre), got {growth}')
    remaining = (kernel_size - center_size) // 2
    side, width = [], growth
    while remaining > 0:
        side.append(min(width, remaining))
        remaining -= side[-1]
        width *= growth
    return side[::-1] + [1] * center_size + side


def _check_grid(grid, kernel_size):
    grid = list(grid)
    if not grid or any(not isinstance(w, int) or w < 1 for w in grid) or sum(grid) != kernel_size:
        raise ValueError(f'grid must be positive int cell widths summing to kernel_size={kernel_size}, '
                         f'got {grid}')
    return grid


def peripheral_conv_channels(channels, conv_ratio):
    """Channels a partial peripheral conv convolves: ``round(conv_ratio * channels)`` (ties to even).

    Raises:
        ValueError: ``conv_ratio`` outside (0, 1] or rounding to no channel.
    """
    if not 0 < conv_ratio <= 1:
        raise ValueError(f'conv_ratio must be in (0, 1], got {conv_ratio}')
    conv_channels = round(conv_ratio * channels)
    if conv_channels < 1:
        raise ValueError(f'conv_ratio={conv_ratio} of channels={channels} convolves no channel')
    return conv_channels


class PeripheralPositionalEmbedding(nn.Module):
    """PeLK's kernel-wise positional embedding ``pos_embed`` (C_conv, K, K), truncated normal (std 0.02).

    A stage builds one and hands it to the :class:`PeripheralConv2d` of each of its blocks, which keep
    a reference without registering it, so the parameter is stored once (by the stage).

    Args:
        channels (int): C_conv, the convolved channels of the layers that use it.
        kernel_size (int): K.
    """

    def __init__(self, channels, kernel_size):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.empty(channels, kernel_size, kernel_size))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def extra_repr(self):
        return f'{self.pos_embed.shape[0]}, kernel_size={self.pos_embed.shape[-1]}'


class PeripheralConv2d(nn.Module):
    """Partial depthwise peripheral convolution with a kernel-wise positional embedding (PeLK).

    The first ``conv_channels = round(conv_ratio * channels)`` channels (Python ``round``: ties to
    even, 124 * 3/8 = 46.5 -> 46) go through ``BN(peripheral conv) [+ BN(small conv)]``; the other
    channels pass unchanged; the output is ``cat([conv part, identity part])``, i.e. the input's channel
    order. The small parallel branch sees the convolved channels only: the paper's identity channels
    are untouched by any spatial mixing.

    The parameter kernel ``weight`` (C_conv, 1, k', k') stands for the dense K x K kernel in which every
    position of grid cell (a, b) holds ``weight[..., a, b]`` (:meth:`expanded_kernel`).

    Positional embedding ``h`` (C_conv, K, K), see :class:`PeripheralPositionalEmbedding`:

    * ``'kernel'`` (default): added to the expanded kernel, ``W = expand(w) + h``. The paper's figure
      motivates ``h`` as what lets the kernel tell apart positions that share a cell; only this reading
      does that, so it is our default. The dense K x K kernel is then built and convolved.
    * ``'input'``: the paper's equation ``Y = sum W (X + h)``. We add ``h`` at every window position,
      zero padding included (what unfolding the zero-padded input and adding ``h`` does), so the term
      is exactly the per-channel constant ``sum_ij expand(w) h``, computed from ``h`` pooled over the
      cells. The BatchNorm after the conv removes per-channel constants, so with this reading ``h``
      has no effect on the output in training mode; it exists to compare with the paper.
    * ``None``: no embedding.

    With ``'input'`` or ``None`` the kernel is piecewise constant and the dense K x K kernel is never
    built. When no BatchNorm uses batch statistics (eval mode, ``norm_eval``), the forward folds the
    BatchNorms, the embedding and the small branch into one kernel and a bias and runs one convolution
    (the same function, differentiable in every parameter); :meth:`switch_to_deploy` makes that
    permanent.

    Args:
        channels (int): input = output channels.
        kernel_size (int): K, odd.
        center_size (int): width-1 centre cells of the grid, see :func:`peripheral_grid`. Default: 5.
        growth (int): width ratio of neighbouring peripheral cells. Default: 2.
        pos_embed (str | None): ``'kernel'``, ``'input'`` or ``None``. Default: ``'kernel'``.
        conv_ratio (float): fraction of channels convolved, in (0, 1]. Default: 3/8.
        small_kernel (int | None): side of the parallel depthwise branch (with its own BN), odd and at
            most K; ``None`` turns the branch off. Default: 5.
        grid (Sequence[int], optional): explicit cell widths summing to K; overrides ``center_size``
            and ``growth``.
        shared_pos_embed (PeripheralPositionalEmbedding, optional): an embedding owned elsewhere (the
            stage) and shared with other layers; by default the layer owns its own ``pos_embed``.
        deploy (bool): build the fused inference form of :meth:`switch_to_deploy` directly (to load a
            deployed checkpoint). Default: False.
    """

    def __init__(self,
                 channels,
                 kernel_size,
                 center_size=5,
                 growth=2,
                 pos_embed='kernel',
                 conv_ratio=3 / 8,
                 small_kernel=5,
                 grid=None,
                 shared_pos_embed=None,
                 deploy=False):
        super().__init__()
        if pos_embed not in POS_EMBED_MODES:
            raise ValueError(f'pos_embed must be one of {POS_EMBED_MODES}, got {pos_embed!r}')
        conv_channels = peripheral_conv_channels(channels, conv_ratio)
        if small_kernel is not None and (small_kernel % 2 == 0 or not 1 <= small_kernel <= kernel_size):
            raise ValueError(f'small_kernel must be None or odd in 1..kernel_size={kernel_size}, '
                             f'got {small_kernel}')
        if grid is None:
            grid = peripheral_grid(kernel_size, center_size, growth)
        self.grid = _check_grid(grid, kernel_size)
        self.channels = channels
        self.conv_channels = conv_channels
        self.kernel_size = kernel_size
        self.small_kernel = small_kernel
        self.pos_embed_mode = pos_embed
        self.deploy = False
        # A tuple keeps a shared embedding out of this layer's children: its owner stores it once.
        self._shared_pos_embed = ()
        # Index of the grid cell of every kernel row/column, to pool the embedding over the cells.
        cell_index = torch.tensor([cell for cell, width in enumerate(self.grid) for _ in range(width)])
        self.register_buffer('cell_index', cell_index, persistent=False)
        if deploy:
            side = len(self.grid) if self._fuses_to_cells() else kernel_size
            self.fused_weight = nn.Parameter(torch.zeros(conv_channels, 1, side, side))
            self.fused_bias = nn.Parameter(torch.zeros(conv_channels))
            self.deploy = True
            return

        cells = len(self.grid)
        self.weight = nn.Parameter(torch.empty(conv_channels, 1, cells, cells))
        # The expanded kernel starts like a dense K x K nn.Conv2d would (uniform, bound 1/sqrt(K*K)),
        # so the output scale does not depend on how coarse the grid is.
        nn.init.uniform_(self.weight, -1 / kernel_size, 1 / kernel_size)
        self.bn = nn.BatchNorm2d(conv_channels)
        self.small_conv = (
            DepthwiseConvBN(conv_channels, (small_kernel, small_kernel)) if small_kernel is not None else None)

        self.pos_embed = None
        if shared_pos_embed is not None:
            if pos_embed is None:
                raise ValueError('shared_pos_embed given but pos_embed=None')
            shape = tuple(shared_pos_embed.pos_embed.shape)
            if shape != (conv_channels, kernel_size, kernel_size):
                raise ValueError(f'shared_pos_embed must be ({conv_channels}, {kernel_size}, {kernel_size}) '
                                 f'(conv channels, K, K), got {shape}')
            self._shared_pos_embed = (shared_pos_embed, )
        elif pos_embed is not None:
            self.pos_embed = PeripheralPositionalEmbedding(conv_channels, kernel_size).pos_embed

    def _embedding(self):
        return self._shared_pos_embed[0].pos_embed if self._shared_pos_embed else self.pos_embed

    def expanded_kernel(self):
        """The dense kernel (C_conv, 1, K, K) of the peripheral conv, before its BatchNorm.

        With ``pos_embed='kernel'`` it includes ``h``; with ``'input'`` the embedding is a bias, not
        part of the kernel.
        """
        if self.deploy:
            raise RuntimeError('expanded_kernel() describes the trainable form; call it before '
                               'switch_to_deploy()')
        kernel = expand_peripheral_kernel(self.weight, self.grid)
        if self.pos_embed_mode == 'kernel':
            kernel = kernel + self._embedding().unsqueeze(1)
        return kernel

    def _input_embedding_bias(self):
        # sum_ij expand(w)_ij h_ij = sum_ab w_ab (sum of h over cell ab): pool h over the cells so the
        # dense kernel is never built.
        h, cells = self._embedding(), len(self.grid)
        pooled = h.new_zeros(self.conv_channels, cells, self.kernel_size).index_add(1, self.cell_index, h)
        pooled = pooled.new_zeros(self.conv_channels, cells, cells).index_add(2, self.cell_index, pooled)
        return (self.weight.squeeze(1) * pooled).sum((1, 2))

    def _small_kernel_offset(self):
        """First cell of the centred small kernel if every position it covers is its own width-1 cell
        (it then folds into the cell-form kernel), else None; 0 without a small branch."""
        if self.small_kernel is None:
            return 0
        start = (self.kernel_size - self.small_kernel) // 2
        cells = self.cell_index[start:start + self.small_kernel].tolist()
        return None if any(self.grid[c] != 1 for c in cells) else cells[0]

    def _fuses_to_cells(self):
        return self.pos_embed_mode != 'kernel' and self._small_kernel_offset() is not None

    def fused_kernel(self):
        """Kernel and bias (C_conv,) of the single conv equal to this layer with running statistics.

        The kernel is in cell form (C_conv, 1, k', k') when it is piecewise constant on the grid (no
        ``'kernel'`` embedding, small branch inside the width-1 centre), else dense (C_conv, 1, K, K).
        """
        if self.deploy:
            return self.fused_weight, self.fused_bias
        cell_form = self._fuses_to_cells()
        kernel, bias = fold_batch_norm(self.weight if cell_form else self.expanded_kernel(), self.bn)
        if self.pos_embed_mode == 'input':
            # BN(conv + b) = scale * conv + shift + scale * b
            bias = bias + self._input_embedding_bias() * self.bn.weight * torch.rsqrt(self.bn.running_var +
                                                                                      self.bn.eps)
        if self.small_conv is not None:
            small, small_bias = self.small_conv.fused_kernel()
            if cell_form:
                offset, cells = self._small_kernel_offset(), len(self.grid)
                small = F.pad(small, [offset, cells - offset - self.small_kernel] * 2)
            else:
                small = pad_kernel(small, kernel.shape[2:])
            kernel, bias = kernel + small, bias + small_bias
        return kernel, bias

    def complexity_kernels(self):
        """Kernels the convolved channels meet, for FLOP counting (``tools/analysis/get_flops.py``).

        The expanded K x K kernel counts densely, as the PeLK paper counts it (its FLOPs are only
        reproduced that way), plus the small branch's kernel; after :meth:`switch_to_deploy`, the
        fused kernel, expanded. The fast path of piecewise-constant kernels costs less than this.
        """
        if self.deploy:
            kernel = self.fused_weight
            if kernel.shape[-1] != self.kernel_size:
                kernel = expand_peripheral_kernel(kernel, self.grid)
            return [kernel]
        kernels = [self.expanded_kernel()]
        if self.small_conv is not None:
            kernels.append(self.small_conv.conv.weight)
        return kernels

    def _uses_batch_statistics(self):
        return self.bn.training or (self.small_conv is not None and self.small_conv.uses_batch_statistics)

    def forward(self, x):
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f'expected input (N, {self.channels}, H, W), got {tuple(x.shape)}')
        x_conv, x_identity = x.split([self.conv_channels, self.channels - self.conv_channels], dim=1)
        if self.deploy or not self._uses_batch_statistics():
            kernel, bias = self.fused_kernel()
            if kernel.shape[-1] == self.kernel_size:
                out = depthwise_conv2d(x_conv, kernel, bias)
            else:
                out = peripheral_depthwise_conv2d(x_conv, kernel, self.grid, bias)
        else:
            if self.pos_embed_mode == 'kernel':
                out = depthwise_conv2d(x_conv, self.expanded_kernel())
            elif self.pos_embed_mode == 'input':
                out = peripheral_depthwise_conv2d(x_conv, self.weight, self.grid, self._input_embedding_bias())
            else:
                out = peripheral_depthwise_conv2d(x_conv, self.weight, self.grid)
            out = self.bn(out)
            if self.small_conv is not None:
                out = out + self.small_conv(x_conv)
        return torch.cat([out, x_identity], dim=1)

    @torch.no_grad()
    def switch_to_deploy(self):
        """Replace the branches, BatchNorms and embedding by :meth:`fused_kernel` (idempotent).

        Outputs equal the eval-mode outputs before the switch; a piecewise-constant kernel stays in
        cell form and keeps the fast path.
        """
        if self.deploy:
            return
        kernel, bias = (t.detach().clone() for t in self.fused_kernel())
        del self.weight, self.bn, self.small_conv, self.pos_embed
        self._shared_pos_embed = ()
        self.fused_weight = nn.Parameter(kernel)
        self.fused_bias = nn.Parameter(bias)
        self.deploy = True

    def extra_repr(self):
        return (f'{self.channels}, kernel_size={self.kernel_size}, conv_channels={self.conv_channels}, '
                f'grid={self.grid}, pos_embed={self.pos_embed_mode!r}, small_kernel={self.small_kernel}, '
                f'shared_pos_embed={bool(self._shared_pos_embed)}, deploy={self.deploy}')

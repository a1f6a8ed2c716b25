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

from mmslak.ops import depthwise_conv2d

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


class PeripheralConv2d(nn.Module):
    """Partial depthwise peripheral convolution with a kernel-wise positional embedding (PeLK).

    The first ``conv_channels = round(conv_ratio * channels)`` channels (Python ``round``: ties to
    even, 124 * 3/8 = 46.5 -> 46) go through ``BN(peripheral conv) [+ BN(small conv)]``; the other
    channels pass unchanged; the output is ``cat([conv part, identity part])`` in the input's channel
    order. The small parallel branch sees the convolved channels only: the paper's identity channels
    are untouched by any spatial mixing.

    The parameter kernel ``weight`` (C_conv, 1, k', k') stands for the dense K x K kernel in which every
    position of grid cell (a, b) holds ``weight[..., a, b]`` (``expanded_kernel()``).

    Positional embedding ``h`` (C_conv, K, K), truncated normal (std 0.02):

    * ``'kernel'`` (default): added to the expanded kernel, ``W = expand(w) + h``. The paper's figure
      motivates ``h`` as what lets the kernel tell apart positions that share a cell; only this reading
      does that, so it is our default. The dense K x K kernel is then built and convolved.
    * ``'input'``: the paper's equation ``Y = sum W (X + h)``. We add ``h`` at every window position,
      zero padding included (what unfolding the zero-padded input and adding ``h`` does), so the term
      is exactly the per-channel constant ``sum_ij expand(w) h``, computed from ``h`` pooled over the
      cells. Note that the BatchNorm after the conv removes per-channel constants, so with this reading
      ``h`` has no effect on the output in training mode; it exists to compare with the paper.
    * ``None``: no embedding.

    With ``'input'`` or ``None`` the kernel is piecewise constant and the dense K x K kernel is never
    built.

    The embedding can be shared by the blocks of a stage: build the layers with
    ``shared_pos_embed=True`` (they then own no ``h``) and pass the stage's tensor to ``forward``.

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
        shared_pos_embed (bool): the embedding is supplied to ``forward`` instead of owned. Default:
            False.
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
                 shared_pos_embed=False):
        super().__init__()
        if pos_embed not in POS_EMBED_MODES:
            raise ValueError(f'pos_embed must be one of {POS_EMBED_MODES}, got {pos_embed!r}')
        if not 0 < conv_ratio <= 1:
            raise ValueError(f'conv_ratio must be in (0, 1], got {conv_ratio}')
        conv_channels = round(conv_ratio * channels)
        if conv_channels < 1:
            raise ValueError(f'conv_ratio={conv_ratio} of channels={channels} convolves no channel')
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
        self.shared_pos_embed = shared_pos_embed and pos_embed is not None
        self.deploy = False
        # Index of the grid cell of every kernel row/column: expansion is two index_selects.
        cell_index = torch.repeat_interleave(torch.arange(len(self.grid)), torch.tensor(self.grid))
        self.register_buffer('cell_index', cell_index, persistent=False)

        cells = len(self.grid)
        self.weight = nn.Parameter(torch.empty(conv_channels, 1, cells, cells))
        self.bn = nn.BatchNorm2d(conv_channels)
        if pos_embed is not None and not shared_pos_embed:
            self.pos_embed = nn.Parameter(self.new_pos_embed(conv_channels, kernel_size))
        else:
            self.pos_embed = None
        if small_kernel is not None:
            self.small_weight = nn.Parameter(torch.empty(conv_channels, 1, small_kernel, small_kernel))
            self.small_bn = nn.BatchNorm2d(conv_channels)
        self.reset_parameters()

    @staticmethod
    def new_pos_embed(conv_channels, kernel_size):
        """A fresh embedding ``h`` (C_conv, K, K), truncated normal with std 0.02 (for a stage to share)."""
        return nn.init.trunc_normal_(torch.empty(conv_channels, kernel_size, kernel_size), std=0.02)

    def reset_parameters(self):
        # The expanded kernel starts like a dense K x K nn.Conv2d would (uniform, bound 1/sqrt(K*K)),
        # so the output scale does not depend on how coarse the grid is.
        nn.init.uniform_(self.weight, -1 / self.kernel_size, 1 / self.kernel_size)
        if self.small_kernel is not None:
            nn.init.uniform_(self.small_weight, -1 / self.small_kernel, 1 / self.small_kernel)

    def _expand(self, cell_kernel):
        return cell_kernel.index_select(2, self.cell_index).index_select(3, self.cell_index)

    def _resolve_pos_embed(self, pos_embed):
        if self.pos_embed_mode is None:
            return None
        if self.shared_pos_embed:
            if pos_embed is None:
                raise ValueError('this PeripheralConv2d shares its positional embedding: pass the '
                                 "stage's pos_embed tensor")
        elif pos_embed is not None:
            raise ValueError('this PeripheralConv2d owns its positional embedding; do not pass one')
        else:
            pos_embed = self.pos_embed
        expected = (self.conv_channels, self.kernel_size, self.kernel_size)
        if tuple(pos_embed.shape) != expected:
            raise ValueError(f'pos_embed must have shape {expected}, got {tuple(pos_embed.shape)}')
        return pos_embed

    def expanded_kernel(self, pos_embed=None):
        """The dense kernel (C_conv, 1, K, K) of the peripheral conv, before its BatchNorm.

        With ``pos_embed='kernel'`` it includes ``h``; with ``'input'`` the embedding is a bias, not
        part of the kernel.

        Args:
            pos_embed (Tensor, optional): the stage's embedding when it is shared.
        """
        if self.deploy:
            raise RuntimeError('expanded_kernel() describes the trainable form; call it before '
                               'switch_to_deploy()')
        kernel = self._expand(self.weight)
        h = self._resolve_pos_embed(pos_embed)
        if self.pos_embed_mode == 'kernel':
            kernel = kernel + h.unsqueeze(1)
        return kernel

    def _input_pos_embed_bias(self, h):
        # sum_ij expand(w)_ij h_ij = sum_ab w_ab (sum of h over cell ab): pool h over the cells so the
        # dense kernel is never built.
        cells = len(self.grid)
        pooled = h.new_zeros(self.conv_channels, cells, self.kernel_size).index_add_(1, self.cell_index, h)
        pooled = pooled.new_zeros(self.conv_channels, cells, cells).index_add_(2, self.cell_index, pooled)
        return (self.weight.squeeze(1) * pooled).sum((1, 2))

    def _peripheral_conv(self, x, cell_kernel, bias=None):
        return depthwise_conv2d(x, self._expand(cell_kernel), bias)

    def forward(self, x, pos_embed=None):
        """Args:
            x (Tensor): (N, channels, H, W).
            pos_embed (Tensor, optional): the stage's embedding (C_conv, K, K) when it is shared.
        """
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f'expected input (N, {self.channels}, H, W), got {tuple(x.shape)}')
        x_conv, x_identity = x.split([self.conv_channels, self.channels - self.conv_channels], dim=1)
        if self.deploy:
            if self.fused_weight.shape[-1] == self.kernel_size:
                out = depthwise_conv2d(x_conv, self.fused_weight, self.fused_bias)
            else:
                out = self._peripheral_conv(x_conv, self.fused_weight, self.fused_bias)
            return torch.cat([out, x_identity], dim=1)

        h = self._resolve_pos_embed(pos_embed)
        if self.pos_embed_mode == 'kernel':
            out = depthwise_conv2d(x_conv, self._expand(self.weight) + h.unsqueeze(1))
        elif self.pos_embed_mode == 'input':
            out = self._peripheral_conv(x_conv, self.weight, self._input_pos_embed_bias(h))
        else:
            out = self._peripheral_conv(x_conv, self.weight)
        out = self.bn(out)
        if self.small_kernel is not None:
            out = out + self.small_bn(depthwise_conv2d(x_conv, self.small_weight))
        return torch.cat([out, x_identity], dim=1)

    @staticmethod
    def _bn_scale_shift(bn):
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        return scale, bn.bias - bn.running_mean * scale

    @torch.no_grad()
    def switch_to_deploy(self, pos_embed=None):
        """Fold the BatchNorms, the embedding and the small branch into one kernel and a bias.

        Without a ``'kernel'`` embedding and with a small branch that fits in the width-1 centre of
        the grid, the fused kernel stays in cell form (C_conv, 1, k', k') and keeps the piecewise
        constant fast path; otherwise the dense (C_conv, 1, K, K) kernel is cached. Outputs equal the
        eval-mode outputs before the switch.

        Args:
            pos_embed (Tensor, optional): the stage's embedding when it is shared.
        """
        if self.deploy:
            return
        h = self._resolve_pos_embed(pos_embed)
        scale, bias = self._bn_scale_shift(self.bn)
        if self.pos_embed_mode == 'input':
            bias = bias + self._input_pos_embed_bias(h) * scale
        pad = self._centre_pad()
        if self.pos_embed_mode == 'kernel' or pad is None:
            kernel = self.expanded_kernel(pos_embed) * scale.view(-1, 1, 1, 1)
            pad = (self.kernel_size - (self.small_kernel or 0)) // 2
        else:
            kernel = self.weight * scale.view(-1, 1, 1, 1)
        if self.small_kernel is not None:
            small_scale, small_shift = self._bn_scale_shift(self.small_bn)
            kernel = kernel + F.pad(self.small_weight * small_scale.view(-1, 1, 1, 1), [pad] * 4)
            bias = bias + small_shift
            del self.small_weight, self.small_bn
        self.fused_weight = nn.Parameter(kernel)
        self.fused_bias = nn.Parameter(bias)
        del self.weight, self.bn, self.pos_embed
        self.deploy = True

    def _centre_pad(self):
        """Cell index where the centred small kernel starts if every position it covers is its own
        width-1 cell (so it folds into the cell kernel), else None."""
        if self.small_kernel is None:
            return 0
        start = (self.kernel_size - self.small_kernel) // 2
        cells = self.cell_index[start:start + self.small_kernel].tolist()
        if any(self.grid[c] != 1 for c in cells):
            return None
        return cells[0]

    def extra_repr(self):
        return (f'{self.channels}, kernel_size={self.kernel_size}, conv_channels={self.conv_channels}, '
                f'grid={self.grid}, pos_embed={self.pos_embed_mode!r}, small_kernel={self.small_kernel}, '
                f'shared_pos_embed={self.shared_pos_embed}, deploy={self.deploy}')

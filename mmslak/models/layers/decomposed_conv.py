"""SLaK's large-kernel depthwise convolution: decomposed (K, N) + (N, K) branches plus an N x N branch.

Paper: `More ConvNets in the 2020s: Scaling up Kernels Beyond 51x51 using Sparsity
<https://arxiv.org/abs/2207.03620>`_. Parameter names follow the official release so that its
checkpoints load one to one: ``LoRA1`` (K, N), ``LoRA2`` (N, K), ``small_conv`` (N, N) with
``decompose=True``; ``lkb_origin`` (K, K) and ``small_conv`` with ``decompose=False`` (RepLKNet style).
Each branch is ``.conv`` (depthwise, no bias) followed by ``.bn`` when ``branch_bn=True``.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmslak.ops import (LargeKernelDepthwiseConv2d, decomposed_depthwise_conv2d,
                        depthwise_conv2d)


def fold_batch_norm(weight, bn):
    """Fold an eval-mode BatchNorm that follows a bias-free conv into the conv's kernel and a bias.

    Args:
        weight (Tensor): conv kernel (C, 1, kh, kw).
        bn (nn.BatchNorm2d | None): the BatchNorm after the conv; ``None`` gives a zero bias.

    Returns:
        tuple[Tensor, Tensor]: kernel and bias (C,) such that ``conv(x, kernel) + bias == bn(conv(x))``
        with the BatchNorm's running statistics.
    """
    if bn is None:
        return weight, weight.new_zeros(weight.shape[0])
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    return weight * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


def pad_kernel(kernel, size):
    """Zero-pad a kernel (C, 1, kh, kw) symmetrically to ``size`` = (KH, KW).

    With odd sides and 'same' padding, convolving with the padded kernel gives exactly the result of
    the original kernel, which is what lets a small branch fold into a larger one.
    """
    kh, kw = kernel.shape[2:]
    dh, dw = size[0] - kh, size[1] - kw
    if dh < 0 or dw < 0 or dh % 2 or dw % 2:
        raise ValueError(f'cannot centre a {kh}x{kw} kernel in {size[0]}x{size[1]}')
    return F.pad(kernel, (dw // 2, dw // 2, dh // 2, dh // 2))


class DepthwiseConvBN(nn.Module):
    """A bias-free depthwise 'same' convolution through :mod:`mmslak.ops`, optionally followed by BN.

    Args:
        channels (int): input and output channels.
        kernel_size (tuple[int, int]): (kh, kw), both odd.
        with_bn (bool): add ``bn`` (``nn.BatchNorm2d``, PyTorch defaults as in the official code).
    """

    def __init__(self, channels, kernel_size, with_bn=True):
        super().__init__()
        self.conv = LargeKernelDepthwiseConv2d(channels, kernel_size, bias=False)
        self.bn = nn.BatchNorm2d(channels) if with_bn else None

    def forward(self, x):
        x = self.conv(x)
        return x if self.bn is None else self.bn(x)

    @property
    def uses_batch_statistics(self):
        """True when ``bn`` normalises with the statistics of the batch rather than running ones."""
        return self.bn is not None and (self.bn.training or self.bn.running_mean is None)

    def fused_kernel(self):
        """Kernel and bias (C,) of the single conv equal to this branch with running statistics."""
        return fold_batch_norm(self.conv.weight, self.bn)


class DecomposedLargeKernelConv(nn.Module):
    """SLaK's large-kernel depthwise token mixer (``large_kernel`` of a block).

    ``decompose=True`` sums three branches: (K, N), (N, K) and (N, N) kernels; ``decompose=False`` sums
    a K x K and an N x N branch. The N x N branch exists only when N < K, as in the official code.

    Whenever no branch BatchNorm uses batch statistics (eval mode, or ``norm_eval`` fine-tuning), the
    forward folds the BatchNorms into the kernels and runs one fused convolution, which is the same
    function and differentiable in every parameter. :meth:`switch_to_deploy` makes that permanent: the
    module then holds ``long_weight`` (C, 1, K, N), ``wide_weight`` (C, 1, N, K) and ``bias`` (or
    ``weight`` (C, 1, K, K) and ``bias`` without decomposition), the layout a model built with
    ``deploy=True`` expects.

    Args:
        channels (int): input and output channels.
        kernel_size (int): the long side K (odd).
        short_kernel (int): the short side N (odd, <= K). Defaults to 5.
        decompose (bool): (K, N) + (N, K) branches instead of one K x K branch. Defaults to True.
        branch_bn (bool): a BatchNorm after every branch. Defaults to True.
        deploy (bool): build the merged form directly (to load a deploy checkpoint). Defaults to False.
    """

    def __init__(self, channels, kernel_size, short_kernel=5, decompose=True, branch_bn=True,
                 deploy=False):
        super().__init__()
        if kernel_size % 2 == 0 or short_kernel % 2 == 0 or not 1 <= short_kernel <= kernel_size:
            raise ValueError('kernel_size and short_kernel must be odd with 1 <= short_kernel <= '
                             f'kernel_size, got kernel_size={kernel_size}, short_kernel={short_kernel}')
        self.channels = channels
        # The long and the short kernel side, K and N.
        self.kernel_size, self.short_kernel = kernel_size, short_kernel
        self.decompose = decompose
        self.branch_bn = branch_bn
        self.deploy = False
        if deploy:
            self._make_merged_parameters()
            return
        if decompose:
            self.LoRA1 = DepthwiseConvBN(channels, (kernel_size, short_kernel), branch_bn)
            self.LoRA2 = DepthwiseConvBN(channels, (short_kernel, kernel_size), branch_bn)
        else:
            self.lkb_origin = DepthwiseConvBN(channels, (kernel_size, kernel_size), branch_bn)
        self.small_conv = (
            DepthwiseConvBN(channels, (short_kernel, short_kernel), branch_bn)
            if short_kernel < kernel_size else None)

    def _branches(self):
        main = [self.LoRA1, self.LoRA2] if self.decompose else [self.lkb_origin]
        return main if self.small_conv is None else main + [self.small_conv]

    def _merged_names(self):
        return ('long_weight', 'wide_weight', 'bias') if self.decompose else ('weight', 'bias')

    def _make_merged_parameters(self, values=None):
        k, n, c = self.kernel_size, self.short_kernel, self.channels
        if values is None:
            shapes = [(c, 1, k, n), (c, 1, n, k), (c, )] if self.decompose else [(c, 1, k, k), (c, )]
            values = [torch.zeros(shape) for shape in shapes]
        for name, value in zip(self._merged_names(), values):
            setattr(self, name, nn.Parameter(value))
        self.deploy = True

    def merged_kernels(self):
        """The fused kernels and bias equal to the branches with running statistics.

        Returns:
            tuple[Tensor, ...]: ``(long_weight, wide_weight, bias)`` with ``decompose=True`` (the N x N
            branch folded into the (K, N) kernel), else ``(weight, bias)``.
        """
        if self.deploy:
            return tuple(getattr(self, name) for name in self._merged_names())
        kernels, biases = zip(*(branch.fused_kernel() for branch in self._branches()))
        bias = sum(biases)
        first = kernels[0]
        if self.small_conv is not None:
            first = first + pad_kernel(kernels[-1], first.shape[2:])
        return (first, kernels[1], bias) if self.decompose else (first, bias)

    def forward(self, x):
        if not self.deploy and any(branch.uses_batch_statistics for branch in self._branches()):
            first, *others = self._branches()
            out = first(x)
            for branch in others:
                out += branch(x)
            return out
        if self.decompose:
            long_weight, wide_weight, bias = self.merged_kernels()
            return decomposed_depthwise_conv2d(x, long_weight, wide_weight, None, bias)
        weight, bias = self.merged_kernels()
        return depthwise_conv2d(x, weight, bias)

    @torch.no_grad()
    def switch_to_deploy(self):
        """Replace the branches by their merged kernels and bias (idempotent)."""
        if self.deploy:
            return
        merged = [t.detach().clone() for t in self.merged_kernels()]
        for name in ('LoRA1', 'LoRA2', 'lkb_origin', 'small_conv'):
            if hasattr(self, name):
                delattr(self, name)
        self._make_merged_parameters(merged)

    def extra_repr(self):
        return (f'{self.channels}, kernel_size={self.kernel_size}, short_kernel={self.short_kernel}, '
                f'decompose={self.decompose}, branch_bn={self.branch_bn}, deploy={self.deploy}')

"""Channels-first LayerNorm with the numerics of the official SLaK / ConvNeXt code."""
import torch.nn as nn
import torch.nn.functional as F


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel dimension of an (N, C, H, W) tensor.

    Normalises every spatial position over its C channels with the biased variance and ``eps`` inside
    the square root, then applies the per-channel affine transform: the official ``LayerNorm(...,
    data_format='channels_first')`` of SLaK and ConvNeXt. It runs ``F.layer_norm`` on the NHWC view of
    the input, so a ``channels_last`` input needs no copy and the output keeps the input's memory
    format.

    Args:
        num_channels (int): number of channels C.
        eps (float): added to the variance. Defaults to 1e-6 (SLaK's value).
    """

    def __init__(self, num_channels, eps=1e-6):
        super().__init__(num_channels, eps=eps)

    def forward(self, x):
        if x.dim() != 4:
            raise ValueError(f'LayerNorm2d expects an (N, C, H, W) tensor, got shape {tuple(x.shape)}')
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)

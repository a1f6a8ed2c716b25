"""An independent SLaK reference for the tests: official-layout state dicts and the official forward.

``official_state_dict`` builds random weights in the layout of the official SLaK classifier (keys as
in the VITA-Group/SLaK release, no prefix). ``official_forward`` re-implements the official classifier's
eval-mode forward with plain torch ops over such a state dict, following the official code line by line
(channels-first LayerNorm written out with the biased variance, F.batch_norm per branch, exact GELU,
``gamma`` after ``pwconv2``, final LayerNorm after global average pooling, then the Linear head).
"""
import torch
import torch.nn.functional as F


def official_state_dict(depths, widths, kernel_sizes, short_kernel=5, num_classes=10, decompose=True,
                        old_names=False, in_channels=3, seed=0):
    """Random official-layout weights; BatchNorm statistics and ``gamma`` are far from their inits."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.):
        return torch.randn(*shape, generator=gen) * scale

    def positive(*shape):
        return torch.rand(*shape, generator=gen) + 0.5

    sd = {}
    sd['downsample_layers.0.0.weight'] = rand(widths[0], in_channels, 4, 4, scale=0.2)
    sd['downsample_layers.0.0.bias'] = rand(widths[0], scale=0.1)
    sd['downsample_layers.0.1.weight'] = positive(widths[0])
    sd['downsample_layers.0.1.bias'] = rand(widths[0], scale=0.1)
    for i in range(1, 4):
        sd[f'downsample_layers.{i}.0.weight'] = positive(widths[i - 1])
        sd[f'downsample_layers.{i}.0.bias'] = rand(widths[i - 1], scale=0.1)
        sd[f'downsample_layers.{i}.1.weight'] = rand(widths[i], widths[i - 1], 2, 2,
                                                      scale=(4 * widths[i - 1])**-0.5)
        sd[f'downsample_layers.{i}.1.bias'] = rand(widths[i], scale=0.1)
    long_names = ('Decom1', 'Decom2') if old_names else ('LoRA1', 'LoRA2')
    for s, (depth, dim, k) in enumerate(zip(depths, widths, kernel_sizes)):
        n = min(short_kernel, k)
        if decompose:
            branches = {long_names[0]: (k, n), long_names[1]: (n, k)}
        else:
            branches = {'lkb_origin': (k, k)}
        if n < k:
            branches['small_conv'] = (n, n)
        for b in range(depth):
            p = f'stages.{s}.{b}.'
            for name, (kh, kw) in branches.items():
                q = f'{p}large_kernel.{name}.'
                sd[q + 'conv.weight'] = rand(dim, 1, kh, kw, scale=(kh * kw)**-0.5)
                sd[q + 'bn.weight'] = positive(dim)
                sd[q + 'bn.bias'] = rand(dim, scale=0.1)
                sd[q + 'bn.running_mean'] = rand(dim, scale=0.1)
                sd[q + 'bn.running_var'] = positive(dim)
                sd[q + 'bn.num_batches_tracked'] = torch.tensor(100)
            sd[p + 'norm.weight'] = positive(dim)
            sd[p + 'norm.bias'] = rand(dim, scale=0.1)
            sd[p + 'pwconv1.weight'] = rand(4 * dim, dim, scale=dim**-0.5)
            sd[p + 'pwconv1.bias'] = rand(4 * dim, scale=0.1)
            sd[p + 'pwconv2.weight'] = rand(dim, 4 * dim, scale=(4 * dim)**-0.5)
            sd[p + 'pwconv2.bias'] = rand(dim, scale=0.1)
            sd[p + 'gamma'] = positive(dim) * 0.5
    sd['norm.weight'] = positive(widths[-1])
    sd['norm.bias'] = rand(widths[-1], scale=0.1)
    sd['head.weight'] = rand(num_classes, widths[-1], scale=widths[-1]**-0.5)
    sd['head.bias'] = rand(num_classes, scale=0.1)
    return sd


def _layer_norm_channels_first(x, weight, bias, eps=1e-6):
    # The official LayerNorm(data_format='channels_first'), written out.
    u = x.mean(1, keepdim=True)
    s = (x - u).pow(2).mean(1, keepdim=True)
    x = (x - u) / torch.sqrt(s + eps)
    return weight[:, None, None] * x + bias[:, None, None]


def _branch(x, sd, prefix):
    weight = sd[prefix + 'conv.weight']
    kh, kw = weight.shape[2:]
    y = F.conv2d(x, weight, None, padding=(kh // 2, kw // 2), groups=x.shape[1])
    return F.batch_norm(y, sd[prefix + 'bn.running_mean'], sd[prefix + 'bn.running_var'],
                        sd[prefix + 'bn.weight'], sd[prefix + 'bn.bias'], False, 0., 1e-5)


def official_forward(sd, x, features_only=False):
    """Eval-mode logits of the official classifier with state dict ``sd`` (keys without prefix).

    With ``features_only``, returns the normalised pooled features that feed the head.
    """
    x = F.conv2d(x, sd['downsample_layers.0.0.weight'], sd['downsample_layers.0.0.bias'], stride=4)
    x = _layer_norm_channels_first(x, sd['downsample_layers.0.1.weight'], sd['downsample_layers.0.1.bias'])
    for s in range(4):
        if s > 0:
            x = _layer_norm_channels_first(x, sd[f'downsample_layers.{s}.0.weight'],
                                           sd[f'downsample_layers.{s}.0.bias'])
            x = F.conv2d(x, sd[f'downsample_layers.{s}.1.weight'], sd[f'downsample_layers.{s}.1.bias'],
                         stride=2)
        b = 0
        while f'stages.{s}.{b}.gamma' in sd:
            p = f'stages.{s}.{b}.'
            branches = sorted({k[len(p) + len('large_kernel.'):].split('.')[0]
                               for k in sd if k.startswith(p + 'large_kernel.')})
            y = sum(_branch(x, sd, f'{p}large_kernel.{name}.') for name in branches)
            y = y.permute(0, 2, 3, 1)
            y = F.layer_norm(y, y.shape[-1:], sd[p + 'norm.weight'], sd[p + 'norm.bias'], 1e-6)
            y = F.linear(y, sd[p + 'pwconv1.weight'], sd[p + 'pwconv1.bias'])
            y = F.gelu(y)
            y = F.linear(y, sd[p + 'pwconv2.weight'], sd[p + 'pwconv2.bias'])
            y = sd[p + 'gamma'] * y
            x = x + y.permute(0, 3, 1, 2)
            b += 1
    x = x.mean([-2, -1])
    x = F.layer_norm(x, x.shape[-1:], sd['norm.weight'], sd['norm.bias'], 1e-6)
    if features_only:
        return x
    return F.linear(x, sd['head.weight'], sd['head.bias'])


def relative_error(actual, expected):
    return ((actual - expected).norm() / expected.norm()).item()

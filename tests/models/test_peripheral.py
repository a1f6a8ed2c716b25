"""peripheral_grid and PeripheralConv2d against independent references (F.conv2d, F.unfold, hand values)."""
import pytest
import torch
import torch.nn.functional as F

from mmslak.models.layers import PeripheralConv2d, peripheral_grid


@pytest.mark.parametrize('kernel_size, center_size, expected', [
    (31, 5, [7, 4, 2, 1, 1, 1, 1, 1, 2, 4, 7]),
    (51, 5, [9, 8, 4, 2, 1, 1, 1, 1, 1, 2, 4, 8, 9]),
    (101, 7, [17, 16, 8, 4, 2, 1, 1, 1, 1, 1, 1, 1, 2, 4, 8, 16, 17]),
])
def test_grid_reproduces_paper(kernel_size, center_size, expected):
    assert peripheral_grid(kernel_size, center_size=center_size) == expected


@pytest.mark.parametrize('args, expected', [
    ((13, 13), [1] * 13),  # centre as large as the kernel: dense
    ((13, 5), [2, 2, 1, 1, 1, 1, 1, 2, 2]),  # 4 per side: 2, then 4 clipped to 2
    ((69, 7), [1, 16, 8, 4, 2] + [1] * 7 + [2, 4, 8, 16, 1]),  # 31 per side: 30 + clipped 1
    ((31, 5, 3), [1, 9, 3, 1, 1, 1, 1, 1, 3, 9, 1]),  # growth 3: 3 + 9 = 12 of 13, then 1
    ((5, 1), [2, 1, 2]),
])
def test_grid_rule_hand_computed(args, expected):
    assert peripheral_grid(*args) == expected


@pytest.mark.parametrize('args', [(30, ), (31, 33), (31, 4), (31, 0), (31, 5, 1), (31.0, ), (-1, )])
def test_grid_rejects_invalid(args):
    with pytest.raises(ValueError):
        peripheral_grid(*args)


def expand_by_loops(cell_kernel, grid):
    """Dense kernel built position by position: row i of the K x K kernel lies in cell a(i)."""
    owner = [cell for cell, width in enumerate(grid) for _ in range(width)]
    size = len(owner)
    dense = cell_kernel.new_empty(cell_kernel.shape[0], 1, size, size)
    for i in range(size):
        for j in range(size):
            dense[:, 0, i, j] = cell_kernel[:, 0, owner[i], owner[j]]
    return dense


def randomise_bn(*bns):
    for bn in bns:
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.normal_()
        bn.bias.data.normal_()


def bn_eval(x, bn):
    shape = (1, -1, 1, 1)
    return ((x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps) *
            bn.weight.view(shape) + bn.bias.view(shape))


def make_layer(**kwargs):
    kwargs = {'channels': 16, 'kernel_size': 21, **kwargs}
    layer = PeripheralConv2d(**kwargs).double().eval()
    randomise_bn(layer.bn, *([layer.small_bn] if layer.small_kernel else []))
    return layer


def reference_output(layer, x, dense_kernel, bias=None):
    conv_channels, size = layer.conv_channels, layer.kernel_size
    x_conv = x[:, :conv_channels]
    out = bn_eval(F.conv2d(x_conv, dense_kernel, bias, padding=size // 2, groups=conv_channels), layer.bn)
    if layer.small_kernel is not None:
        small = F.conv2d(x_conv, layer.small_weight, padding=layer.small_kernel // 2, groups=conv_channels)
        out = out + bn_eval(small, layer.small_bn)
    return torch.cat([out, x[:, conv_channels:]], dim=1)


def test_expanded_kernel_matches_grid():
    layer = make_layer(pos_embed=None)
    assert layer.grid == [2, 4, 2, 1, 1, 1, 1, 1, 2, 4, 2]  # 8 per side: 2 + 4, then 8 clipped to 2
    assert layer.weight.shape == (6, 1, 11, 11)
    dense = expand_by_loops(layer.weight, layer.grid)
    torch.testing.assert_close(layer.expanded_kernel(), dense)
    kernel_layer = make_layer(pos_embed='kernel')
    torch.testing.assert_close(kernel_layer.expanded_kernel(),
                               expand_by_loops(kernel_layer.weight, kernel_layer.grid) +
                               kernel_layer.pos_embed.unsqueeze(1))


@pytest.mark.parametrize('small_kernel', [5, None])
def test_forward_kernel_mode_against_conv2d(small_kernel):
    layer = make_layer(pos_embed='kernel', small_kernel=small_kernel)
    x = torch.randn(2, 16, 13, 17, dtype=torch.double)
    dense = expand_by_loops(layer.weight, layer.grid) + layer.pos_embed.unsqueeze(1)
    torch.testing.assert_close(layer(x), reference_output(layer, x, dense))


def test_forward_without_embedding_against_conv2d():
    layer = make_layer(pos_embed=None)
    x = torch.randn(2, 16, 9, 30, dtype=torch.double)
    torch.testing.assert_close(layer(x), reference_output(layer, x, expand_by_loops(layer.weight, layer.grid)))


def test_forward_input_mode_is_the_papers_equation():
    """Y = sum_window W (X + h), h added at every window position (padding too): literal unfold."""
    layer = make_layer(pos_embed='input', small_kernel=None, kernel_size=11, channels=8)
    conv_channels, size = layer.conv_channels, 11
    x = torch.randn(2, 8, 7, 10, dtype=torch.double)
    dense = expand_by_loops(layer.weight, layer.grid)
    patches = F.unfold(x[:, :conv_channels], size, padding=size // 2)  # (N, C*K*K, H*W)
    patches = patches.view(2, conv_channels, size * size, -1) + layer.pos_embed.reshape(1, conv_channels, -1, 1)
    conv = (patches * dense.reshape(1, conv_channels, -1, 1)).sum(2).view(2, conv_channels, 7, 10)
    expected = torch.cat([bn_eval(conv, layer.bn), x[:, conv_channels:]], dim=1)
    torch.testing.assert_close(layer(x), expected)


def test_input_mode_embedding_is_cancelled_by_batchnorm_in_training():
    layer = make_layer(pos_embed='input').train()
    x = torch.randn(2, 16, 12, 12, dtype=torch.double)
    before = layer(x)
    layer.pos_embed.data.normal_()
    torch.testing.assert_close(layer(x), before)


def test_gradients_match_dense_reference():
    for mode in ('kernel', 'input', None):
        layer = make_layer(pos_embed=mode, channels=8, kernel_size=13)
        x = torch.randn(1, 8, 10, 10, dtype=torch.double, requires_grad=True)
        grad_out = torch.randn(1, 8, 10, 10, dtype=torch.double)
        (layer(x) * grad_out).sum().backward()
        ours = [x.grad, layer.weight.grad] + ([layer.pos_embed.grad] if mode else [])
        x.grad = None
        weight = layer.weight.detach().clone().requires_grad_()
        h = layer.pos_embed.detach().clone().requires_grad_() if mode else None
        dense = expand_by_loops(weight, layer.grid)
        bias = None
        if mode == 'kernel':
            dense = dense + h.unsqueeze(1)
        elif mode == 'input':
            bias = (expand_by_loops(weight, layer.grid).squeeze(1) * h).sum((1, 2))
        (reference_output(layer, x, dense, bias) * grad_out).sum().backward()
        reference = [x.grad, weight.grad] + ([h.grad] if mode else [])
        for got, want in zip(ours, reference):
            torch.testing.assert_close(got, want)


def test_partial_channels_rounding_and_order():
    layer = PeripheralConv2d(124, 13)
    assert layer.conv_channels == 46  # round(46.5) -> 46, ties to even
    assert PeripheralConv2d(249, 13).conv_channels == 93
    x = torch.randn(1, 124, 8, 8)
    out = layer(x)
    torch.testing.assert_close(out[:, 46:], x[:, 46:])  # identity channels last, untouched
    assert not torch.allclose(out[:, :46], x[:, :46])


def test_shared_embedding():
    h = torch.nn.Parameter(PeripheralConv2d.new_pos_embed(6, 21))
    first = PeripheralConv2d(16, 21, shared_pos_embed=True).double().eval()
    second = PeripheralConv2d(16, 21, shared_pos_embed=True).double().eval()
    assert first.pos_embed is None and all('pos_embed' not in name for name, _ in first.named_parameters())
    x = torch.randn(1, 16, 8, 8, dtype=torch.double)
    (first(x, h.double()) + second(x, h.double())).sum().backward()
    assert h.grad is not None and h.grad.abs().sum() > 0
    with pytest.raises(ValueError, match='shares'):
        first(x)
    with pytest.raises(ValueError, match='owns'):
        PeripheralConv2d(16, 21)(x.float(), h)
    with pytest.raises(ValueError, match='shape'):
        first(x, torch.zeros(6, 19, 19, dtype=torch.double))


def test_explicit_grid_override():
    grid = [5, 1, 1, 1, 1, 1, 5]
    layer = make_layer(grid=grid, kernel_size=15, pos_embed=None, small_kernel=3)
    assert layer.weight.shape[-1] == 7
    x = torch.randn(1, 16, 9, 9, dtype=torch.double)
    torch.testing.assert_close(layer(x), reference_output(layer, x, expand_by_loops(layer.weight, grid)))


@pytest.mark.parametrize('kwargs', [
    dict(pos_embed='both'),
    dict(conv_ratio=0),
    dict(conv_ratio=1.5),
    dict(conv_ratio=0.01),  # rounds to zero channels
    dict(small_kernel=4),
    dict(small_kernel=23),
    dict(grid=[10, 1, 9]),  # sums to 20, not 21
    dict(grid=[10, 0, 11]),
])
def test_layer_rejects_invalid(kwargs):
    with pytest.raises(ValueError):
        PeripheralConv2d(16, 21, **kwargs)


@pytest.mark.parametrize('mode, small_kernel, center_size, cell_form', [
    ('kernel', 5, 5, False),
    ('input', 5, 5, True),
    (None, 5, 5, True),
    (None, None, 5, True),
    (None, 7, 5, False),  # 7x7 branch does not fit the 5 width-1 centre cells: dense cache
    ('input', 3, 1, False),
])
def test_switch_to_deploy_same_outputs(mode, small_kernel, center_size, cell_form):
    layer = make_layer(pos_embed=mode, small_kernel=small_kernel, center_size=center_size)
    x = torch.randn(2, 16, 11, 14, dtype=torch.double)
    before = layer(x)
    layer.switch_to_deploy()
    assert layer.deploy and not hasattr(layer, 'bn') and not hasattr(layer, 'small_bn')
    expected_side = len(layer.grid) if cell_form else 21
    assert layer.fused_weight.shape == (6, 1, expected_side, expected_side)
    torch.testing.assert_close(layer(x), before)


def test_switch_to_deploy_with_shared_embedding():
    h = PeripheralConv2d.new_pos_embed(6, 21).double()
    layer = PeripheralConv2d(16, 21, shared_pos_embed=True).double().eval()
    randomise_bn(layer.bn, layer.small_bn)
    x = torch.randn(1, 16, 10, 10, dtype=torch.double)
    before = layer(x, h)
    layer.switch_to_deploy(h)
    torch.testing.assert_close(layer(x), before)

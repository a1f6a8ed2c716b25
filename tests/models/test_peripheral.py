"""peripheral_grid and PeripheralConv2d against independent references (F.conv2d, F.unfold, hand values)."""
import pytest
import torch
import torch.nn.functional as F

from mmslak.models.layers import PeripheralConv2d, PeripheralPositionalEmbedding, peripheral_grid
from mmslak.ops import depthwise_conv2d


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


def apply_bn(x, bn):
    """BatchNorm written out: batch statistics in training mode, running ones in eval mode."""
    if bn.training:
        mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    shape = (1, -1, 1, 1)
    return (x - mean.view(shape)) / torch.sqrt(var.view(shape) + bn.eps) * bn.weight.view(shape) + bn.bias.view(shape)


def make_layer(**kwargs):
    kwargs = {'channels': 16, 'kernel_size': 21, **kwargs}
    layer = PeripheralConv2d(**kwargs).double().eval()
    randomise_bn(layer.bn, *([layer.small_conv.bn] if layer.small_kernel else []))
    return layer


def reference_output(layer, x, dense_kernel, bias=None):
    conv_channels, size = layer.conv_channels, layer.kernel_size
    x_conv = x[:, :conv_channels]
    out = apply_bn(F.conv2d(x_conv, dense_kernel, bias, padding=size // 2, groups=conv_channels), layer.bn)
    if layer.small_kernel is not None:
        small = F.conv2d(x_conv, layer.small_conv.conv.weight, padding=layer.small_kernel // 2,
                         groups=conv_channels)
        out = out + apply_bn(small, layer.small_conv.bn)
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
    expected = torch.cat([apply_bn(conv, layer.bn), x[:, conv_channels:]], dim=1)
    torch.testing.assert_close(layer(x), expected)


def test_input_mode_embedding_is_cancelled_by_batchnorm_in_training():
    layer = make_layer(pos_embed='input').train()
    x = torch.randn(2, 16, 12, 12, dtype=torch.double)
    before = layer(x)
    layer.pos_embed.data.normal_()
    torch.testing.assert_close(layer(x), before)


@pytest.mark.parametrize('training', [True, False])  # branches with batch statistics / fused kernel
@pytest.mark.parametrize('mode', ['kernel', 'input', None])
def test_forward_and_gradients_match_dense_reference(mode, training):
    layer = make_layer(pos_embed=mode, channels=8, kernel_size=13).train(training)
    x = torch.randn(2, 8, 10, 10, dtype=torch.double, requires_grad=True)
    grad_out = torch.randn(2, 8, 10, 10, dtype=torch.double)
    out = layer(x)
    (out * grad_out).sum().backward()
    ours = [out, x.grad, layer.weight.grad] + ([layer.pos_embed.grad] if mode else [])
    x.grad = None
    weight = layer.weight.detach().clone().requires_grad_()
    h = layer.pos_embed.detach().clone().requires_grad_() if mode else None
    dense, bias = expand_by_loops(weight, layer.grid), None
    if mode == 'kernel':
        dense = dense + h.unsqueeze(1)
    elif mode == 'input':
        bias = (dense.squeeze(1) * h).sum((1, 2))
    expected = reference_output(layer, x, dense, bias)
    (expected * grad_out).sum().backward()
    reference = [expected, x.grad, weight.grad] + ([h.grad] if mode else [])
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


def test_shared_embedding_is_one_parameter_stored_by_its_owner():
    shared = PeripheralPositionalEmbedding(6, 21).double()
    layers = [PeripheralConv2d(16, 21, shared_pos_embed=shared).double() for _ in range(2)]
    for layer in layers:
        assert layer.pos_embed is None
        assert all('pos_embed' not in name for name in layer.state_dict())
    x = torch.randn(2, 16, 8, 8, dtype=torch.double)
    (layers[0](x) + layers[1](x)).sum().backward()
    assert shared.pos_embed.grad is not None and shared.pos_embed.grad.abs().sum() > 0
    reference = make_layer(pos_embed='kernel').train()
    reference.load_state_dict({**layers[0].state_dict(), 'pos_embed': shared.pos_embed})
    torch.testing.assert_close(layers[0](x), reference(x))


@pytest.mark.parametrize('kwargs', [
    dict(pos_embed=None, shared_pos_embed=PeripheralPositionalEmbedding(6, 21)),
    dict(shared_pos_embed=PeripheralPositionalEmbedding(6, 19)),
    dict(shared_pos_embed=PeripheralPositionalEmbedding(16, 21)),
])
def test_shared_embedding_rejects_mismatch(kwargs):
    with pytest.raises(ValueError):
        PeripheralConv2d(16, 21, **kwargs)


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
    layer = make_layer(pos_embed=mode, small_kernel=small_kernel, center_size=center_size).train()
    x = torch.randn(2, 16, 11, 14, dtype=torch.double)
    layer(x)  # update running statistics (and, for 'input', absorb the embedding bias into them)
    layer.eval()
    dense = expand_by_loops(layer.weight, layer.grid)
    bias = None
    if mode == 'kernel':
        dense = dense + layer.pos_embed.unsqueeze(1)
    elif mode == 'input':
        bias = (dense.squeeze(1) * layer.pos_embed).sum((1, 2))
    expected = reference_output(layer, x, dense, bias)
    layer.switch_to_deploy()
    assert layer.deploy and not hasattr(layer, 'bn') and not hasattr(layer, 'small_conv')
    assert [name for name, _ in layer.named_parameters()] == ['fused_weight', 'fused_bias']
    expected_side = len(layer.grid) if cell_form else 21
    assert layer.fused_weight.shape == (6, 1, expected_side, expected_side)
    torch.testing.assert_close(layer(x), expected)
    layer.switch_to_deploy()  # idempotent
    torch.testing.assert_close(layer(x), expected)
    built = PeripheralConv2d(16, 21, pos_embed=mode, small_kernel=small_kernel, center_size=center_size,
                             deploy=True).double()
    built.load_state_dict(layer.state_dict())  # strict: deploy=True builds the same shapes
    assert 'deploy=True' in repr(built)
    torch.testing.assert_close(built(x), expected)


def test_switch_to_deploy_with_shared_embedding():
    shared = PeripheralPositionalEmbedding(6, 21).double()
    layer = PeripheralConv2d(16, 21, shared_pos_embed=shared).double().eval()
    randomise_bn(layer.bn, layer.small_conv.bn)
    x = torch.randn(1, 16, 10, 10, dtype=torch.double)
    before = layer(x)
    layer.switch_to_deploy()
    shared.pos_embed.data.zero_()  # the deployed layer no longer depends on it
    torch.testing.assert_close(layer(x), before)


@pytest.mark.parametrize('training', [True, False])
@pytest.mark.parametrize('mode', ['input', None])
def test_piecewise_constant_kernels_never_go_dense(monkeypatch, mode, training):
    """pos_embed None / 'input': the fast peripheral op, never the expanded K x K kernel."""
    from mmslak.models.layers import peripheral

    def no_expansion(*args, **kwargs):
        raise AssertionError('the dense kernel was built')

    def small_kernels_only(x, weight, bias=None):
        assert weight.shape[-1] < 21, 'the dense kernel was convolved'
        return depthwise_conv2d(x, weight, bias)

    layer = make_layer(pos_embed=mode).train(training)
    x = torch.randn(2, 16, 12, 12, dtype=torch.double, requires_grad=True)
    expected = layer(x)
    monkeypatch.setattr(peripheral, 'expand_peripheral_kernel', no_expansion)
    monkeypatch.setattr(peripheral, 'depthwise_conv2d', small_kernels_only)
    out = layer(x)
    out.sum().backward()
    torch.testing.assert_close(out, expected)
    layer.eval().switch_to_deploy()
    layer(x)


def test_complexity_kernels_are_the_dense_kernels_convolved():
    layer = make_layer(pos_embed='input')
    kernels = layer.complexity_kernels()
    dense = expand_by_loops(layer.weight, layer.grid)
    assert [tuple(k.shape) for k in kernels] == [(6, 1, 21, 21), (6, 1, 5, 5)]
    torch.testing.assert_close(kernels[0], dense)
    torch.testing.assert_close(kernels[1], layer.small_conv.conv.weight)
    fused, _ = layer.fused_kernel()
    layer.switch_to_deploy()
    (deployed, ) = layer.complexity_kernels()
    torch.testing.assert_close(deployed, expand_by_loops(fused, layer.grid))

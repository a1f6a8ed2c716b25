"""tools/analysis/visualize_kernels.py: the pictured kernels are the layers' impulse responses; densities by hand."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from analysis_tools import load_tool, tiny_slak_config
from PIL import Image

from mmslak.models.layers import PeripheralConv2d

kernel_tool = load_tool('visualize_kernels')

MODELS = {
    'SLaK decomposed': dict(),
    'SLaK K x K': dict(decompose=False),
    'PeLK': dict(type='mmslak.PeLK', kernel_size=(17, 15, 13, 7)),
}


def randomise_batch_norms(model, generator):
    """Non-trivial running statistics and affine parameters, so that folding them matters."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            channels = module.num_features
            module.running_mean.copy_(torch.randn(channels, generator=generator, dtype=torch.float64))
            module.running_var.copy_(torch.rand(channels, generator=generator, dtype=torch.float64) + 0.5)
            module.weight.data.copy_(torch.randn(channels, generator=generator, dtype=torch.float64))
            module.bias.data.copy_(torch.randn(channels, generator=generator, dtype=torch.float64))


def conv_bn(x, weight, bn):
    """BatchNorm (running statistics) after a depthwise 'same' F.conv2d."""
    padding = (weight.shape[2] // 2, weight.shape[3] // 2)
    return bn(F.conv2d(x, weight, padding=padding, groups=x.shape[1]))


def unfused_forward(layer, x):
    """The layer's branches, each convolved with F.conv2d and normalised on its own, summed (no folding)."""
    if isinstance(layer, PeripheralConv2d):
        x = x[:, :layer.conv_channels]
        return conv_bn(x, layer.expanded_kernel(), layer.bn) + conv_bn(x, layer.small_conv.conv.weight,
                                                                      layer.small_conv.bn)
    branches = [layer.LoRA1, layer.LoRA2] if layer.decompose else [layer.lkb_origin]
    return sum(conv_bn(x, branch.conv.weight, branch.bn) for branch in branches + [layer.small_conv])


@torch.no_grad()
def impulse_response_kernel(layer):
    """The (C_conv, K, K) kernel of a depthwise 'same' layer, read from its unfused response to an impulse.

    Cross-correlation with a kernel w maps an impulse at p to ``out[p - i + r] = w[r + i]``: the response
    around p is w flipped in both axes; the response to zeros (the bias) is subtracted.
    """
    k, r = layer.kernel_size, layer.kernel_size // 2
    size = 2 * k + 1
    impulse = torch.zeros(1, layer.channels, size, size, dtype=torch.float64)
    impulse[..., size // 2, size // 2] = 1
    response = unfused_forward(layer, impulse) - unfused_forward(layer, torch.zeros_like(impulse))
    window = response[0, :, size // 2 - r:size // 2 + r + 1, size // 2 - r:size // 2 + r + 1]
    return window.flip(-2, -1)


@pytest.mark.parametrize('name', MODELS)
def test_pictured_kernels_are_the_impulse_responses_of_the_layers(tmp_path, name):
    erf_tool = load_tool('visualize_erf')
    _, model = erf_tool.build_model(tiny_slak_config(tmp_path / 'model.py', **MODELS[name]))
    model.double()
    randomise_batch_norms(model, torch.Generator().manual_seed(0))
    stages = kernel_tool.stage_kernels(model)
    for stage, blocks in zip(model.stages, stages):
        layer = stage[0].large_kernel
        kernel, grid = blocks[0]
        expected = impulse_response_kernel(layer)
        np.testing.assert_allclose(kernel, expected.abs().mean(0).numpy(), rtol=1e-10, atol=1e-12)
        assert grid == (layer.grid if name == 'PeLK' else None)
    if name == 'PeLK':
        assert max(stages[0][0][1]) > 1  # the 17 x 17 stage shares cells: its grid is drawn


def test_pictures_and_layer_densities_of_a_sparse_checkpoint(tmp_path, capsys):
    erf_tool = load_tool('visualize_erf')
    config = tiny_slak_config(tmp_path / 'model.py')
    _, model = erf_tool.build_model(config)
    state = model.state_dict()
    sparse_name = 'stages.0.0.pwconv1.weight'
    flat = state[sparse_name].view(-1)
    flat[:flat.numel() // 4] = 0  # a quarter of this layer's weights pruned
    torch.save({'state_dict': state}, tmp_path / 'sparse.pth')

    stages, densities = kernel_tool.main([config, str(tmp_path / 'sparse.pth'), '--out-dir', str(tmp_path / 'out')])

    counts = {name: (nonzero, size) for name, nonzero, size in densities}
    expected_names = [name for name, param in model.named_parameters() if param.dim() in (2, 4)]
    assert list(counts) == expected_names  # params='backbone' of a model without a backbone: all of it
    size = state[sparse_name].numel()
    assert counts[sparse_name] == (size - size // 4, size)
    assert all(nonzero == total for name, (nonzero, total) in counts.items() if name != sparse_name)
    total = sum(size for _, size in counts.values())
    assert f'{total - size // 4}/{total} weights non-zero' in capsys.readouterr().out
    for index, blocks in enumerate(stages):
        saved = np.load(tmp_path / 'out' / f'stage{index}_kernels.npy')
        kernel_size = model.kernel_size[index]
        assert saved.shape == (1, kernel_size, kernel_size) and np.array_equal(saved[0], blocks[0][0])
        with Image.open(tmp_path / 'out' / f'stage{index}_kernels.png') as png:
            assert 150 <= png.size[0] <= 1000 and 150 <= png.size[1] <= 1000
    with Image.open(tmp_path / 'out' / 'density.png') as png:
        assert png.size[0] >= 400 and png.size[1] >= 150


def test_a_missing_checkpoint_is_one_error_line(tmp_path, capsys):
    config = tiny_slak_config(tmp_path / 'model.py')
    with pytest.raises(SystemExit) as exit_info:
        kernel_tool.main([config, str(tmp_path / 'missing.pth'), '--out-dir', str(tmp_path / 'out')])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count('\n') == 1
    assert f'checkpoint {tmp_path}/missing.pth does not exist' in err

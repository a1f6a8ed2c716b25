"""SLaK backbone: official numerics, deploy merging, training options, extension points."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from slak_reference import official_forward, official_state_dict, relative_error

from mmslak.models import LargeKernelConvNeXt, SLaK, switch_to_deploy
from mmslak.models.layers import DecomposedLargeKernelConv

DEPTHS = [1, 2, 1, 1]
WIDTHS = [8, 16, 24, 32]
KERNELS = (13, 11, 9, 3)  # the last stage's kernel is smaller than N=5: no small_conv there


def tiny_slak(**kwargs):
    cfg = dict(arch=dict(depths=DEPTHS, widths=WIDTHS), kernel_size=KERNELS, width_factor=1.0)
    cfg.update(kwargs)
    return SLaK(**cfg)


def backbone_state(official):
    """The official classifier's weights under the backbone's names (final ``norm`` -> ``norm3``)."""
    return {('norm3.' + k[len('norm.'):] if k.startswith('norm.') else k): v
            for k, v in official.items() if not k.startswith('head.')}


def official_tiny(decompose=True, seed=0):
    return official_state_dict(DEPTHS, WIDTHS, KERNELS, short_kernel=3, decompose=decompose,
                               seed=seed)


@pytest.fixture
def image():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def test_state_dict_has_official_key_layout():
    official = official_tiny()
    model = tiny_slak(short_kernel=3)
    assert set(model.state_dict()) == set(backbone_state(official))
    for key, value in backbone_state(official).items():
        assert model.state_dict()[key].shape == value.shape, key


def test_full_size_tiny_matches_official_widths_and_kernels():
    with torch.device('meta'):
        model = SLaK(arch='tiny')
    assert model.widths == [124, 249, 499, 998]
    block = model.stages[2][8].large_kernel
    assert block.LoRA1.conv.weight.shape == (499, 1, 47, 5)
    assert block.LoRA2.conv.weight.shape == (499, 1, 5, 47)
    assert block.small_conv.conv.weight.shape == (499, 1, 5, 5)
    # Backbone plus the 998 -> 1000 Linear head is the official SLaK-T classifier.
    assert sum(p.numel() for p in model.parameters()) + 998 * 1000 + 1000 == 50_703_838


@pytest.mark.parametrize('decompose', [True, False])
@pytest.mark.parametrize('channels_last', [True, False])
def test_eval_forward_matches_official(decompose, channels_last, image):
    official = official_tiny(decompose)
    model = tiny_slak(short_kernel=3, decompose=decompose, channels_last=channels_last).eval()
    model.load_state_dict(backbone_state(official))
    (features, ) = model(image)
    expected = official_forward(official, image, features_only=True)
    assert relative_error(features, expected) < 1e-5


def test_train_forward_uses_batch_statistics_per_branch(image):
    official = official_tiny()
    model = tiny_slak(short_kernel=3).train()
    model.load_state_dict(backbone_state(official))
    mixer = model.stages[0][0].large_kernel
    x = torch.randn(2, 8, 16, 16)
    expected = 0
    for name in ('LoRA1', 'LoRA2', 'small_conv'):
        w = official[f'stages.0.0.large_kernel.{name}.conv.weight']
        y = F.conv2d(x, w, padding=(w.shape[2] // 2, w.shape[3] // 2), groups=8)
        mean, var = y.mean([0, 2, 3]), y.var([0, 2, 3], unbiased=False)
        bn = {k: official[f'stages.0.0.large_kernel.{name}.bn.{k}'] for k in ('weight', 'bias')}
        expected = expected + (y - mean[:, None, None]) / torch.sqrt(var[:, None, None] + 1e-5) \
            * bn['weight'][:, None, None] + bn['bias'][:, None, None]
    assert relative_error(mixer(x), expected) < 1e-5


def test_fused_eval_path_has_the_gradients_of_the_branches():
    """With frozen BN statistics (eval or norm_eval) the fused kernel is the same differentiable function."""
    mixer = DecomposedLargeKernelConv(6, 9, short_kernel=3)
    for module in mixer.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2)
    mixer.eval()
    reference = copy.deepcopy(mixer)
    x = torch.randn(2, 6, 12, 12)
    mixer(x).square().sum().backward()
    branches = (reference.LoRA1, reference.LoRA2, reference.small_conv)
    sum(branch(x) for branch in branches).square().sum().backward()
    for (name, param), ref in zip(mixer.named_parameters(), reference.parameters()):
        torch.testing.assert_close(param.grad, ref.grad, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize('decompose', [True, False])
def test_switch_to_deploy_matches_branches_and_reloads(decompose, image, tmp_path):
    official = official_tiny(decompose)
    model = tiny_slak(short_kernel=3, decompose=decompose).eval()
    model.load_state_dict(backbone_state(official))
    expected = official_forward(official, image, features_only=True)

    classifier = nn.Sequential(model).eval()  # a whole model around the backbone
    assert switch_to_deploy(classifier) is classifier
    assert model.deploy
    mixer = model.stages[1][1].large_kernel
    names = {name for name, _ in mixer.named_parameters()}
    assert names == ({'long_weight', 'wide_weight', 'bias'} if decompose else {'weight', 'bias'})
    if decompose:
        assert mixer.long_weight.shape == (16, 1, 11, 3) and mixer.wide_weight.shape == (16, 1, 3, 11)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert relative_error(model(image)[0], expected) < 1e-4
    model.switch_to_deploy()  # idempotent
    assert relative_error(model(image)[0], expected) < 1e-4

    torch.save(model.state_dict(), tmp_path / 'deploy.pth')
    reloaded = tiny_slak(short_kernel=3, decompose=decompose, deploy=True).eval()
    reloaded.load_state_dict(torch.load(tmp_path / 'deploy.pth', weights_only=True), strict=True)
    assert relative_error(reloaded(image)[0], expected) < 1e-4


def test_deploy_block_runs_one_fused_decomposed_conv(monkeypatch):
    import mmslak.models.layers.decomposed_conv as decomposed_conv
    calls = []
    original = decomposed_conv.decomposed_depthwise_conv2d

    def spy(x, w_long, w_wide, w_small=None, bias=None):
        calls.append((tuple(w_long.shape), tuple(w_wide.shape), w_small, bias is not None))
        return original(x, w_long, w_wide, w_small, bias)

    monkeypatch.setattr(decomposed_conv, 'decomposed_depthwise_conv2d', spy)
    mixer = DecomposedLargeKernelConv(4, 7, short_kernel=5).eval()
    mixer.switch_to_deploy()
    mixer(torch.randn(1, 4, 10, 10))
    assert calls == [((4, 1, 7, 5), (4, 1, 5, 7), None, True)]


def test_multi_scale_outputs_for_dense_prediction(image):
    model = tiny_slak(short_kernel=3, out_indices=(0, 1, 2, 3), gap_before_final_norm=False).eval()
    outs = model(image)
    assert [tuple(o.shape) for o in outs] == [(2, 8, 16, 16), (2, 16, 8, 8), (2, 24, 4, 4), (2, 32, 2, 2)]
    assert all(o.is_contiguous() for o in outs)
    assert {f'norm{i}' for i in range(4)} <= {name for name, _ in model.named_children()}
    # Each output is the channel-wise LayerNorm of that stage: zero mean over C before the affine.
    norm0 = model.norm0
    raw = (outs[0] - norm0.bias[:, None, None]) / norm0.weight[:, None, None]
    assert raw.mean(1).abs().max() < 1e-4


def test_frozen_stages_norm_eval_and_train_returns_self():
    model = tiny_slak(short_kernel=3, frozen_stages=2, norm_eval=True)
    assert model.train() is model
    for i in range(2):
        assert not any(p.requires_grad for p in model.stages[i].parameters())
        assert not any(p.requires_grad for p in model.downsample_layers[i].parameters())
        assert not model.stages[i].training
    assert all(p.requires_grad for p in model.stages[2].parameters())
    assert model.stages[2].training and model.stages[2][0].pwconv1.training
    assert not any(m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_with_cp_gives_the_same_gradients(image):
    torch.manual_seed(0)
    plain = tiny_slak(short_kernel=3, layer_scale_init_value=1.0).train()
    checkpointed = tiny_slak(short_kernel=3, layer_scale_init_value=1.0, with_cp=True).train()
    checkpointed.load_state_dict(plain.state_dict())
    for model in (plain, checkpointed):
        model(image.requires_grad_())[0].square().sum().backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_drop_path_rates_grow_linearly_over_all_blocks():
    model = tiny_slak(short_kernel=3, drop_path_rate=0.4)
    blocks = [block for stage in model.stages for block in stage]
    rates = [getattr(block.drop_path, 'drop_prob', 0.) for block in blocks]
    assert rates == pytest.approx([0., 0.1, 0.2, 0.3, 0.4])


@pytest.mark.parametrize('kwargs, message', [
    (dict(arch='huge'), "unknown arch 'huge'"),
    (dict(arch=dict(depths=[1, 1, 1])), 'depths and widths'),
    (dict(arch=dict(depths=[1, 1, 1], widths=[8, 8, 8])), 'needs 4 depths'),
    (dict(kernel_size=(13, 11, 9)), 'one entry per stage'),
    (dict(out_indices=(4, )), 'out_indices'),
    (dict(frozen_stages=5), 'frozen_stages'),
    (dict(kernel_size=(12, 11, 9, 7)), 'odd'),
])
def test_bad_arguments_are_explained(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_slak(**kwargs)


def test_registered_in_mmslak_and_root_scopes():
    from mmengine.registry import MODELS as ROOT_MODELS

    from mmslak.registry import MODELS
    cfg = dict(arch=dict(depths=DEPTHS, widths=WIDTHS), kernel_size=KERNELS, short_kernel=3, width_factor=1.)
    assert isinstance(ROOT_MODELS.build(dict(type='SLaK', **cfg)), SLaK)
    assert isinstance(MODELS.build(dict(type='mmslak.SLaK', **cfg)), SLaK)


def test_init_weights_follows_the_official_scheme():
    model = tiny_slak(short_kernel=3)
    model.init_weights()
    weight = model.stages[0][0].large_kernel.LoRA1.conv.weight
    assert 0.01 < weight.std() < 0.03  # trunc_normal(std=.02), not the kaiming default (std 0.09 here)
    assert torch.all(model.stages[0][0].pwconv1.bias == 0)
    assert torch.all(model.stages[0][0].gamma == 1e-6)


def test_subclass_extension_points_share_one_module_per_stage():

    class SharedBias(nn.Module):

        def __init__(self, dim):
            super().__init__()
            self.bias = nn.Parameter(torch.randn(dim))

    class Mixer(nn.Module):

        def __init__(self, shared):
            super().__init__()
            self._shared = (shared, )  # a reference, not a child

        def forward(self, x):
            return x + self._shared[0].bias[:, None, None]

    class SharedNet(LargeKernelConvNeXt):

        def make_stage_shared(self, stage_index, dim, kernel_size):
            return SharedBias(dim)

        def make_large_kernel(self, stage_index, dim, kernel_size, stage_shared):
            return Mixer(stage_shared)

    model = SharedNet(dict(depths=DEPTHS, widths=WIDTHS), KERNELS)
    keys = [k for k in model.state_dict() if 'shared' in k]
    assert keys == [f'stages.{s}.shared.bias' for s in range(4)]
    assert model.stages[1][0].large_kernel._shared[0] is model.stages[1].shared
    model(torch.randn(1, 3, 32, 32))[0].sum().backward()
    assert model.stages[1].shared.bias.grad is not None

"""PeLK backbone: sizes against a hand-derived formula, grids per arch, shared embeddings, deploy."""
import pytest
import torch
from mmengine.registry import MODELS as ROOT_MODELS

from mmslak.models import PeLK
from mmslak.registry import MODELS

TINY_ARCH = dict(depths=[2, 1, 2, 1], widths=[8, 16, 24, 32])
TINY_KERNELS = (17, 13, 11, 7)


def dense_param_count(widths, depths, cells, kernel_sizes, small_kernel=5, conv_ratio=3 / 8):
    """Parameters of PeLK without classifier head, from the documented design choices.

    Stem conv 4x4 (+bias) and LayerNorm; per downsampling LayerNorm + conv 2x2 (+bias); per block: cell
    kernel C_conv k'^2, its BN, the small branch C_conv n^2 and its BN, LayerNorm, the two Linear layers
    (+bias), layer scale; per stage one positional embedding C_conv K^2; the final LayerNorm ``norm3``.
    """
    total = 3 * 16 * widths[0] + widths[0] + 2 * widths[0]
    for previous, width in zip(widths, widths[1:]):
        total += 2 * previous + 4 * previous * width + width
    for width, depth, cell_count, size in zip(widths, depths, cells, kernel_sizes):
        conv = round(conv_ratio * width)
        small_branch = conv * small_kernel**2 + 2 * conv if small_kernel else 0
        block = (conv * cell_count**2 + 2 * conv + small_branch + 2 * width + (4 * width * width + 4 * width) +
                 (4 * width * width + width) + width)
        total += depth * block + conv * size * size
    return total + 2 * widths[-1]


# widths: int(1.3 * ConvNeXt widths); cells k' of (51, 49, 47) with a 5 centre: 5 + 2 * len([2, 4, 8, x]);
# the 13 stage is dense (k' = 13). PeLK-101 (centre 7): 101 -> 7 + 2 * 5 cells, 69 -> 7 + 2 * 5 (the
# clipped 1), 67 -> 7 + 2 * 4 (2 + 4 + 8 + 16 = 30 exactly).
@pytest.mark.parametrize('arch, widths, depths, cells, kernel_sizes', [
    ('tiny', [124, 249, 499, 998], [3, 3, 9, 3], [13, 13, 13, 13], [51, 49, 47, 13]),
    ('small', [124, 249, 499, 998], [3, 3, 27, 3], [13, 13, 13, 13], [51, 49, 47, 13]),
    ('base', [166, 332, 665, 1331], [3, 3, 27, 3], [13, 13, 13, 13], [51, 49, 47, 13]),
    ('base-101', [166, 332, 665, 1331], [3, 3, 27, 3], [17, 17, 15, 13], [101, 69, 67, 13]),
])
def test_dense_parameter_count_matches_formula(arch, widths, depths, cells, kernel_sizes):
    with torch.device('meta'):
        model = PeLK(arch=arch)
    assert model.widths == widths
    assert sum(p.numel() for p in model.parameters()) == dense_param_count(widths, depths, cells, kernel_sizes)


def test_without_small_branch():
    with torch.device('meta'):
        model = PeLK(arch='tiny', short_kernel=None)
    assert model.stages[0][0].large_kernel.small_conv is None
    assert sum(p.numel() for p in model.parameters()) == dense_param_count(
        [124, 249, 499, 998], [3, 3, 9, 3], [13, 13, 13, 13], [51, 49, 47, 13], small_kernel=None)


def test_grids_per_arch():
    with torch.device('meta'):
        tiny, base_101 = PeLK(arch='tiny'), PeLK(arch='base-101')
    assert [stage[0].large_kernel.grid for stage in tiny.stages] == [
        [9, 8, 4, 2, 1, 1, 1, 1, 1, 2, 4, 8, 9],
        [8, 8, 4, 2, 1, 1, 1, 1, 1, 2, 4, 8, 8],
        [7, 8, 4, 2, 1, 1, 1, 1, 1, 2, 4, 8, 7],
        [1] * 13,
    ]
    assert [stage[0].large_kernel.grid for stage in base_101.stages] == [
        [17, 16, 8, 4, 2, 1, 1, 1, 1, 1, 1, 1, 2, 4, 8, 16, 17],
        [1, 16, 8, 4, 2, 1, 1, 1, 1, 1, 1, 1, 2, 4, 8, 16, 1],
        [16, 8, 4, 2, 1, 1, 1, 1, 1, 1, 1, 2, 4, 8, 16],
        [1] * 13,
    ]


def test_grid_overrides():
    with torch.device('meta'):
        model = PeLK(arch='tiny', dense_max_kernel=0, grids=[None, None, [23, 1, 23], None])
    assert [len(stage[0].large_kernel.grid) for stage in model.stages] == [13, 13, 3, 9]
    with pytest.raises(ValueError, match='grids'):
        PeLK(arch=TINY_ARCH, kernel_size=TINY_KERNELS, grids=[None])


def test_unknown_arch_names_the_choices():
    with pytest.raises(ValueError, match="base-101"):
        PeLK(arch='huge')


def small_model(**kwargs):
    kwargs = {'arch': TINY_ARCH, 'kernel_size': TINY_KERNELS, 'width_factor': 1.0, **kwargs}
    return PeLK(**kwargs)


def test_builds_from_registries_and_returns_requested_stages():
    cfg = dict(arch=TINY_ARCH, kernel_size=TINY_KERNELS, width_factor=1.0, out_indices=(0, 1, 2, 3),
               gap_before_final_norm=False)
    assert isinstance(MODELS.build(dict(type='PeLK', **cfg)), PeLK)
    model = ROOT_MODELS.build(dict(type='mmslak.PeLK', **cfg)).eval()
    outs = model(torch.rand(2, 3, 64, 64))
    assert [tuple(out.shape) for out in outs] == [(2, 8, 16, 16), (2, 16, 8, 8), (2, 24, 4, 4), (2, 32, 2, 2)]


def test_one_embedding_per_stage_read_by_every_block():
    model = small_model()
    keys = [key for key in model.state_dict() if 'pos_embed' in key]
    assert keys == [f'stages.{s}.shared.pos_embed' for s in range(4)]
    for stage in model.stages:
        stage.shared.pos_embed.data.zero_()
        for block in stage:
            layer = block.large_kernel
            expanded_weight = layer.weight.repeat_interleave(torch.tensor(layer.grid), 2).repeat_interleave(
                torch.tensor(layer.grid), 3)
            torch.testing.assert_close(layer.expanded_kernel(), expanded_weight)
    per_block = small_model(share_pos_embed=False)
    assert sorted(key for key in per_block.state_dict() if 'pos_embed' in key) == sorted(
        f'stages.{s}.{b}.large_kernel.pos_embed' for s, depth in enumerate(TINY_ARCH['depths'])
        for b in range(depth))
    assert not [key for key in small_model(pos_embed=None).state_dict() if 'pos_embed' in key]


def test_frozen_stages_freeze_the_stage_embedding():
    model = small_model(frozen_stages=1).train()
    assert not model.stages[0].shared.pos_embed.requires_grad
    assert model.stages[1].shared.pos_embed.requires_grad
    assert not model.stages[0][0].large_kernel.bn.training


@pytest.mark.parametrize('pos_embed', ['kernel', 'input', None])
def test_switch_to_deploy_same_outputs(pos_embed):
    torch.manual_seed(0)
    model = small_model(pos_embed=pos_embed, layer_scale_init_value=1.0, dense_max_kernel=7).double()
    model.train()
    model(torch.rand(4, 3, 64, 64, dtype=torch.double))  # non-trivial BatchNorm running statistics
    model.eval()
    x = torch.rand(2, 3, 64, 64, dtype=torch.double)
    before = model(x)[0]
    model.switch_to_deploy()
    assert all(stage.shared is None for stage in model.stages)
    assert not [key for key in model.state_dict() if 'bn' in key or 'pos_embed' in key or 'small_conv' in key]
    cells = [stage[0].large_kernel.fused_weight.shape[-1] for stage in model.stages]
    # A 'kernel' embedding makes the kernel dense; otherwise the piecewise-constant form is kept, the
    # small branch folded into the 5 width-1 centre cells: 17 -> [4, 2, 1 x 5, 2, 4], 13 -> [2, 2, 1 x 5,
    # 2, 2], 11 -> [1, 2, 1 x 5, 2, 1]; the 7 stage is dense (dense_max_kernel=7).
    assert cells == ([17, 13, 11, 7] if pos_embed == 'kernel' else [9, 9, 9, 7])
    torch.testing.assert_close(model(x)[0], before)
    deployed = small_model(pos_embed=pos_embed, layer_scale_init_value=1.0, dense_max_kernel=7,
                           deploy=True).double().eval()
    deployed.load_state_dict(model.state_dict())  # strict: the same keys and shapes
    torch.testing.assert_close(deployed(x)[0], before)


def test_with_cp_same_gradients():
    torch.manual_seed(0)
    plain = small_model(drop_path_rate=0.)
    checkpointed = small_model(with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 64, 64)
    for model in (plain, checkpointed):
        model.train()
        model(x)[0].sum().backward()
    for (name, p), q in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)

"""tools/analysis/get_flops.py against hand-computed parameter and multiply-accumulate counts."""
import importlib.util
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
DEPTHS, WIDTHS, KERNELS, N = [1, 2, 1, 1], [8, 16, 24, 32], (9, 7, 7, 5), 3
SIZE = 64
SPARSE_HOOK = "custom_hooks = [dict(type='SparseTrainingHook', sparsity=0.5)]\n"


def load_tool():
    spec = importlib.util.spec_from_file_location('get_flops', REPO / 'tools' / 'analysis' / 'get_flops.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_config(path, extra=''):
    path.write_text(
        "custom_imports = dict(imports=['mmslak'], allow_failed_imports=False)\n"
        f"model = dict(type='mmslak.SLaK', arch=dict(depths={DEPTHS}, widths={WIDTHS}), "
        f"kernel_size={KERNELS}, short_kernel={N}, width_factor=1.0)\n" + extra)
    return str(path)


def hand_counts():
    """Parameters and MACs of the tiny SLaK backbone at 64x64, written out from the architecture."""
    params = macs = 0
    side = SIZE // 4
    params += WIDTHS[0] * 3 * 16 + WIDTHS[0] + 2 * WIDTHS[0]  # stem conv + LN
    macs += side * side * WIDTHS[0] * 3 * 16
    for s, (depth, c, k) in enumerate(zip(DEPTHS, WIDTHS, KERNELS)):
        if s:
            side //= 2
            params += 2 * WIDTHS[s - 1] + c * WIDTHS[s - 1] * 4 + c
            macs += side * side * c * WIDTHS[s - 1] * 4
        small = N * N if N < k else 0
        kernel = 2 * k * N + small
        branches = 3 if small else 2
        block_params = c * kernel + branches * 2 * c + 2 * c + (c * 4 * c + 4 * c) + (4 * c * c + c) + c
        block_macs = side * side * (c * kernel + 8 * c * c)
        params += depth * block_params
        macs += depth * block_macs
    params += 2 * WIDTHS[-1]  # norm3
    return params, macs, side


def test_dense_counts_match_the_architecture(tmp_path, capsys):
    tool = load_tool()
    result = tool.main([write_config(tmp_path / 'cfg.py'), '--shape', str(SIZE), str(SIZE)])
    params, macs, _ = hand_counts()
    assert result['params'] == params and result['flops'] == macs
    assert result['params_nonzero'] == params and result['flops_nonzero'] == macs
    out = capsys.readouterr().out
    assert f'{params:,}' in out and f'{macs:,}' in out and 'all weights dense' in out


def test_config_sparsity_counts_sparse_weights_only(tmp_path):
    tool = load_tool()
    config = write_config(tmp_path / 'cfg.py', SPARSE_HOOK)
    result = tool.main([config, '--shape', str(SIZE), str(SIZE)])
    params, macs, _ = hand_counts()
    _, model = tool.build_model(config)
    weights = sum(p.numel() for p in model.parameters() if p.dim() in (2, 4))
    assert result['params_nonzero'] == params - weights // 2
    assert result['flops_nonzero'] == macs // 2  # every MAC involves one sparse weight
    overridden = tool.main([config, '--shape', str(SIZE), str(SIZE), '--sparsity', '0.25'])
    assert overridden['params_nonzero'] == params - weights // 4


def test_checkpoint_zeros_are_counted_exactly(tmp_path):
    tool = load_tool()
    config = write_config(tmp_path / 'cfg.py', SPARSE_HOOK)
    _, model = tool.build_model(config)
    state = model.state_dict()
    lora = state['stages.2.0.large_kernel.LoRA1.conv.weight']  # (24, 1, 7, 3), stage 2 runs at 4x4
    lora[:, :, :3] = 0
    pwconv = state['stages.1.1.pwconv2.weight']  # (16, 64), stage 1 runs at 8x8
    pwconv[:5] = 0
    torch.save(dict(state_dict=state), tmp_path / 'sparse.pth')
    result = tool.main([config, '--shape', str(SIZE), str(SIZE), '--checkpoint',
                        str(tmp_path / 'sparse.pth')])
    params, macs, _ = hand_counts()
    zero_lora, zero_pw = 24 * 3 * 3, 5 * 64
    zero_biases = sum(int((p == 0).sum()) for n, p in model.named_parameters() if p.dim() == 1)
    assert result['params_nonzero'] == params - zero_lora - zero_pw - zero_biases
    assert result['flops_nonzero'] == macs - 4 * 4 * zero_lora - 8 * 8 * zero_pw


def test_deploy_form_counts_the_merged_kernels():
    tool = load_tool()
    from mmslak.models import SLaK
    model = SLaK(arch=dict(depths=DEPTHS, widths=WIDTHS), kernel_size=KERNELS, short_kernel=N,
                 width_factor=1.0)
    before = tool.count_complexity(model, (1, 3, SIZE, SIZE), {})
    model.switch_to_deploy()
    after = tool.count_complexity(model, (1, 3, SIZE, SIZE), {})
    # Each block loses its N x N branch, folded into the (K, N) kernel (every K here exceeds N).
    saved = sum(d * (SIZE // 4 >> s)**2 * c * N * N for s, (d, c) in enumerate(zip(DEPTHS, WIDTHS)))
    assert before['flops'] - after['flops'] == saved


@pytest.mark.parametrize('arch, params', [('tiny', 50_703_838)])
def test_full_size_classifier_config(arch, params, capsys):
    pytest.importorskip('mmpretrain')
    tool = load_tool()
    result = tool.main([str(REPO / 'configs' / 'slak' / f'slak-{arch}_in1k.py')])
    assert result['params'] == params
    # 40% of the conv and linear weights are zero in the estimate; biases and norms stay dense.
    assert 0.59 * params < result['params_nonzero'] < 0.61 * params
    assert 0.59 * result['flops'] < result['flops_nonzero'] < 0.61 * result['flops']
    assert 'params=\'model\'' in capsys.readouterr().out


def test_modules_can_report_the_kernels_they_expand_to():
    tool = load_tool()

    class PartialExpandingConv(torch.nn.Module):
        """Convolves the first 2 of 4 channels with its 3x3 weight zero-padded to 7x7."""

        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(2, 1, 3, 3))

        def complexity_kernels(self):
            return [torch.nn.functional.pad(self.weight, (2, 2, 2, 2))]

        def forward(self, x):
            conv = torch.nn.functional.conv2d(x[:, :2], self.complexity_kernels()[0], padding=3, groups=2)
            return torch.cat([conv, x[:, 2:]], dim=1)

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1, bias=False), PartialExpandingConv())
    result = tool.count_complexity(model, (1, 3, 10, 10))
    assert result['params'] == 12 + 18
    assert result['flops'] == 10 * 10 * (12 + 2 * 49)
    assert result['flops_nonzero'] == 10 * 10 * (12 + 2 * 9)
    # an assumed sparsity of the weight carries over to the kernel it expands into
    assumed = tool.count_complexity(model, (1, 3, 10, 10), {'0.weight': 0.5, '1.weight': 0.25})
    assert assumed['flops_nonzero'] == 10 * 10 * (12 * 0.5 + 2 * 9 * 0.25)


def test_two_stage_detector_heads_count_at_the_test_time_limits():
    """Every stage's box head on test_cfg.rpn.max_per_img regions, its mask head on test_cfg.rcnn.max_per_img."""
    pytest.importorskip('mmdet')
    tool = load_tool()
    config = str(REPO / 'configs' / 'toy' / 'cascade-mask-rcnn_slak-toy_fpn_1xb4-8e_toy-coco.py')

    def count(regions, detections):
        _, model = tool.build_model(config, {'model.test_cfg.rpn.max_per_img': regions,
                                             'model.test_cfg.rcnn.max_per_img': detections})
        return tool.count_complexity(model, (1, 3, 64, 64), {})['flops']

    # The toy config's heads, per region: box head 4 shared 3x3 convs (64 -> 32 -> 32) at 7x7, a 1568 -> 256
    # fc, then 4 class scores and 3 x 4 box deltas; mask head 4 3x3 convs of 64 channels at 14x14, a 2x2
    # stride-2 deconvolution (each of its 14x14 inputs meets the whole 64 x 64 x 2 x 2 weight), 3 mask logits
    # at 28x28.
    box_head = (64 * 32 + 3 * 32 * 32) * 9 * 49 + 32 * 49 * 256 + 256 * 4 + 256 * 12
    mask_head = 4 * 64 * 64 * 9 * 196 + 196 * 64 * 64 * 4 + 784 * 64 * 3
    stages = 3
    base = count(300, 100)
    assert count(400, 100) - base == stages * 100 * box_head
    assert count(300, 150) - base == stages * 50 * mask_head

"""ONNX translation of mmslak's custom ops: standard operators only, equal to F.conv2d in float64.

Each op of :mod:`mmslak.ops` is exported with both torch exporters (dynamo with the onnxscript table,
TorchScript with the registered symbolics), with and without merging the decomposed kernels, and run by
ONNX Runtime at two input sizes through one file with dynamic height and width. The reference is
``F.conv2d`` in float64 with the kernels written out densely here (the decomposed kernels zero padded,
the peripheral cells repeated by hand), independently of the code under test.
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmslak.deployment import CUSTOM_OPS, export_onnx, onnx_op_types, onnxruntime_session
from mmslak.ops import (decomposed_depthwise_conv2d, depthwise_conv2d, expand_peripheral_kernel,
                        peripheral_depthwise_conv2d)

pytest.importorskip('onnxruntime')
pytest.importorskip('onnxscript')

CHANNELS = 6
GRID = [3, 2, 1, 2, 3]  # a peripheral kernel of 5 x 5 cells expanding to 11 x 11


def expand_by_hand(weight, grid):
    rows = []
    for a, height in enumerate(grid):
        row = torch.cat([weight[:, :, a:a + 1, b:b + 1].expand(-1, -1, height, width)
                         for b, width in enumerate(grid)], dim=3)
        rows.append(row)
    return torch.cat(rows, dim=2)


def centred(kernel, side):
    kh, kw = kernel.shape[2:]
    return F.pad(kernel, [(side - kw) // 2, (side - kw) // 2, (side - kh) // 2, (side - kh) // 2])


class AllOps(nn.Module):
    """Every op and optional argument: depthwise with and without bias, decomposed with and without the
    small kernel and bias, peripheral with and without bias, and a depthwise kernel computed in the graph
    (no two convolutions alike, which the exporter's optimizer would merge)."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)

        def param(*shape):
            return nn.Parameter(torch.randn(*shape, generator=generator) * 0.2)

        self.square, self.bias = param(CHANNELS, 1, 7, 7), param(CHANNELS)
        self.long, self.wide, self.small = param(CHANNELS, 1, 9, 3), param(CHANNELS, 1, 3, 9), param(CHANNELS, 1, 3, 3)
        self.long2, self.wide2 = param(CHANNELS, 1, 9, 3), param(CHANNELS, 1, 3, 9)
        self.cells = param(CHANNELS, 1, len(GRID), len(GRID))
        self.embed = param(CHANNELS, 1, sum(GRID), sum(GRID))

    def forward(self, x):
        y = depthwise_conv2d(x, self.square, self.bias)
        y = (decomposed_depthwise_conv2d(y, self.long, self.wide, self.small, self.bias) +
             decomposed_depthwise_conv2d(y, self.long2, self.wide2))
        y = (peripheral_depthwise_conv2d(y, self.cells, GRID, self.bias) +
             peripheral_depthwise_conv2d(y, self.cells, GRID))
        # a kernel computed in the graph, whose sides the dynamo exporter does not know as numbers (PeLK)
        y = depthwise_conv2d(y, expand_peripheral_kernel(self.cells, GRID) + self.embed)
        return depthwise_conv2d(y, self.square)

    def reference(self, x):
        """The same function with F.conv2d in float64 and dense kernels built here."""
        p = {name: value.detach().double() for name, value in self.named_parameters()}
        x = x.double()

        def conv(t, kernel, bias=None):
            return F.conv2d(t, kernel, bias, padding=(kernel.shape[2] // 2, kernel.shape[3] // 2), groups=CHANNELS)

        y = conv(x, p['square'], p['bias'])
        merged = centred(p['long'], 9) + centred(p['wide'], 9) + centred(p['small'], 9)
        y = conv(y, merged, p['bias']) + conv(y, centred(p['long2'], 9) + centred(p['wide2'], 9))
        cells = expand_by_hand(p['cells'], GRID)
        y = conv(y, cells, p['bias']) + conv(y, cells)
        y = conv(y, cells + p['embed'])
        return conv(y, p['square'])


@pytest.mark.parametrize('exporter', ['dynamo', 'torchscript'])
@pytest.mark.parametrize('merge', [False, True], ids=['conv-per-kernel', 'merged'])
def test_ops_export_to_standard_onnx_and_match_float64_conv(tmp_path, exporter, merge):
    model = AllOps().eval()
    path = str(tmp_path / 'ops.onnx')
    export_onnx(model, torch.randn(1, CHANNELS, 20, 24), path, exporter=exporter, dynamic=True, merge_decomposed=merge)

    counts = onnx_op_types(path)
    assert not [op for op in counts if '::' in op], counts  # standard domain only
    # 3 plain + 2 peripheral convolutions, and the decomposed ones: (3 + 2) per kernel or 2 merged (the
    # other operators compute kernels from the parameters: Pad, Gather, and what repeat_interleave becomes)
    assert counts['Conv'] == 5 + (2 if merge else 5)

    session = onnxruntime_session(path)
    for shape in [(1, CHANNELS, 20, 24), (2, CHANNELS, 33, 17)] if exporter == 'torchscript' else \
            [(1, CHANNELS, 20, 24), (1, CHANNELS, 33, 17)]:
        x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
        expected = model.reference(x)
        result = torch.from_numpy(session.run(None, {'input': x.numpy()})[0]).double()
        assert result.shape == expected.shape
        assert (result - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_every_custom_op_has_a_translation():
    from mmslak.deployment import onnx_translation_table
    table = onnx_translation_table()
    assert {op.name() for op in table} == set(CUSTOM_OPS)
    registered = {f'mmslak::{name}' for name in dir(torch.ops.mmslak)
                  if not name.startswith('_') and hasattr(getattr(torch.ops.mmslak, name), 'default')}
    forward_ops = {name for name in registered if not ('backward' in name or 'grad' in name)}
    assert forward_ops <= set(CUSTOM_OPS), f'forward ops without an ONNX translation: {forward_ops - set(CUSTOM_OPS)}'


@pytest.mark.parametrize('exporter', ['dynamo', 'torchscript'])
def test_adaptive_pooling_is_exact_at_every_size_of_a_dynamic_export(tmp_path, exporter):
    """UperNet's pyramid pooling: the stock translation fixes the pooling windows at the export shape."""
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.AdaptiveAvgPool2d(3), nn.AdaptiveAvgPool2d((2, 5))).eval()
    path = str(tmp_path / 'pool.onnx')
    export_onnx(model, torch.randn(1, 3, 6, 6), path, exporter=exporter, dynamic=True)
    assert [type(layer) for layer in model] == [nn.Conv2d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool2d]
    session = onnxruntime_session(path)
    for height, width in [(6, 6), (7, 5), (13, 17)]:
        x = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(height))
        conv = model[0]
        expected = F.adaptive_avg_pool2d(F.adaptive_avg_pool2d(
            F.conv2d(x.double(), conv.weight.detach().double(), conv.bias.detach().double()), 3), (2, 5))
        result = torch.from_numpy(session.run(None, {'input': x.numpy()})[0]).double()
        assert (result - expected).abs().max() <= 1e-5 * expected.abs().max()

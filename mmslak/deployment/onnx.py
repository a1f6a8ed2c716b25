"""ONNX export of models that use mmslak's convolution ops, in standard ONNX operators only.

The models convolve through ``torch.library`` custom ops (:mod:`mmslak.ops`), which no ONNX exporter
knows. Each of them is a depthwise 'same' convolution, so each translates exactly into ONNX ``Conv``
with ``group = C`` (and ``Add``); the file needs no custom domain, so ONNX Runtime, TensorRT and OpenVINO
run it without a plugin:

* ``mmslak::dwconv2d_forward(x, weight, bias)``: one ``Conv`` with pads ``(kh // 2, kw // 2)``;
* ``mmslak::decomposed_dwconv2d_forward(x, w_long, w_wide, w_small, bias)`` (SLaK): one ``Conv`` per
  kernel, summed with ``Add``; with ``merge_decomposed=True``, one ``Conv`` whose K x K kernel is the sum
  of the kernels zero padded to K x K (``Pad``, ``Add`` on the weights), which is one node per block but
  K / (2 n) times the multiply-adds (5x for K = 51, n = 5), and 2.5-4x slower in ONNX Runtime on a CPU;
* ``mmslak::peripheral_dwconv2d(x, weight, grid, bias)`` (PeLK): the K x K kernel expanded from the cell
  weights (``Gather`` along both kernel axes), then one ``Conv``.

The weight computations (``Pad``, ``Gather``, ``Add`` of constants) are folded into initializers by the
exporter's optimizer or, at the latest, by ONNX Runtime when it loads the file.

Both of torch's exporters are covered: :func:`onnx_translation_table` gives the
``custom_translation_table`` of the dynamo exporter (``torch.onnx.export(..., dynamo=True)``, onnxscript),
:func:`register_torchscript_symbolics` registers the symbolics of the TorchScript one (``dynamo=False``);
:func:`export_onnx` runs either. onnxscript is imported only when the dynamo table is built, so
:mod:`mmslak.ops` and this module import with torch alone.
"""
from contextlib import nullcontext
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

import mmslak.ops  # noqa: F401  (registers the torch.ops.mmslak ops translated here)
from .wrappers import shape_generic_pooling

DEFAULT_OPSET = 18
EXPORTERS = ('dynamo', 'torchscript')
DEPTHWISE_OP = 'mmslak::dwconv2d_forward'
DECOMPOSED_OP = 'mmslak::decomposed_dwconv2d_forward'
PERIPHERAL_OP = 'mmslak::peripheral_dwconv2d'
CUSTOM_OPS = (DEPTHWISE_OP, DECOMPOSED_OP, PERIPHERAL_OP)


class _DynamoGraph:
    """Node builder of the dynamo exporter: onnxscript ops on the exporter's values."""

    def __init__(self):
        from onnxscript import opset18
        self.op = opset18

    @staticmethod
    def kernel_shape(value) -> Tuple[Optional[int], ...]:
        """The shape of a value, None for the sizes not known as numbers."""
        return tuple(side if isinstance(side, int) else None for side in value.shape)

    def conv(self, x, weight, bias, channels, kernel_hw):
        if None in kernel_hw:
            return self.op.Conv(x, weight, bias, group=channels, auto_pad='SAME_UPPER')
        return self.op.Conv(x, weight, bias, group=channels, pads=_same_pads(kernel_hw))

    def add(self, a, b):
        return self.op.Add(a, b)

    def pad(self, weight, pads):
        return self.op.Pad(weight, self.op.Constant(value_ints=pads))

    def gather(self, weight, index, axis):
        return self.op.Gather(weight, self.op.Constant(value_ints=index), axis=axis)


class _TorchScriptGraph:
    """Node builder of the TorchScript exporter: ``g.op`` on JIT values."""

    def __init__(self, g):
        self.g = g

    @staticmethod
    def kernel_shape(value) -> Tuple[Optional[int], ...]:
        """The shape of a value, None for the sizes not known as numbers."""
        return tuple(value.type().varyingSizes())

    def conv(self, x, weight, bias, channels, kernel_hw):
        inputs = (x, weight) if bias is None else (x, weight, bias)
        if None in kernel_hw:
            return self.g.op('Conv', *inputs, group_i=channels, auto_pad_s='SAME_UPPER')
        return self.g.op('Conv', *inputs, group_i=channels, pads_i=_same_pads(kernel_hw),
                         kernel_shape_i=list(kernel_hw))

    def add(self, a, b):
        return self.g.op('Add', a, b)

    def pad(self, weight, pads):
        return self.g.op('Pad', weight, self.g.op('Constant', value_t=torch.tensor(pads)))

    def gather(self, weight, index, axis):
        return self.g.op('Gather', weight, self.g.op('Constant', value_t=torch.tensor(index)), axis_i=axis)


def _same_pads(kernel_hw):
    """ONNX pads (top, left, bottom, right) of a 'same' convolution with an odd (kh, kw) kernel."""
    kh, kw = kernel_hw
    return [kh // 2, kw // 2, kh // 2, kw // 2]


def _depthwise(graph, x, weight, bias):
    # A kernel computed in the graph can have sides the exporter does not know as numbers (PeLK's
    # expanded kernel); its padding is then ONNX's SAME_UPPER, which is (k // 2, k // 2) for odd k.
    channels, _, kh, kw = graph.kernel_shape(weight)
    return graph.conv(x, weight, bias, channels or graph.kernel_shape(x)[1], (kh, kw))


def _pad_to(graph, weight, side):
    """Zero-pad a (C, 1, kh, kw) kernel symmetrically to (C, 1, side, side): the same 'same' convolution."""
    kh, kw = graph.kernel_shape(weight)[2:]
    top, left = (side - kh) // 2, (side - kw) // 2
    if (top, left) == (0, 0):
        return weight
    return graph.pad(weight, [0, 0, top, left, 0, 0, top, left])


def _decomposed(graph, x, kernels, bias, merge):
    """Sum of 'same' depthwise convolutions with ``kernels`` (None entries skipped), plus ``bias``."""
    kernels = [kernel for kernel in kernels if kernel is not None]
    if not merge:
        out = _depthwise(graph, x, kernels[0], bias)
        for kernel in kernels[1:]:
            out = graph.add(out, _depthwise(graph, x, kernel, None))
        return out
    channels, _, long_side, _ = graph.kernel_shape(kernels[0])  # w_long: (C, 1, K, n)
    merged = _pad_to(graph, kernels[0], long_side)
    for kernel in kernels[1:]:
        merged = graph.add(merged, _pad_to(graph, kernel, long_side))
    return graph.conv(x, merged, bias, channels, (long_side, long_side))


def _peripheral(graph, x, weight, grid, bias):
    """Expand the cell weights to the K x K kernel (cell ``a`` repeated ``grid[a]`` times), then Conv."""
    index = [cell for cell, width in enumerate(grid) for _ in range(width)]
    kernel = graph.gather(graph.gather(weight, index, axis=2), index, axis=3)
    side = sum(grid)
    return graph.conv(x, kernel, bias, graph.kernel_shape(weight)[0], (side, side))


def onnx_translation_table(merge_decomposed: bool = False) -> Dict[Callable, Callable]:
    """The ``custom_translation_table`` of ``torch.onnx.export(..., dynamo=True)`` for mmslak's ops.

    Args:
        merge_decomposed (bool): translate a decomposed SLaK convolution into one ``Conv`` with the
            merged K x K kernel instead of one ``Conv`` per kernel plus ``Add``. Defaults to False.

    Returns:
        dict: ``torch.ops.mmslak.<op>.default`` -> translation function (onnxscript, opset 18).

    Raises:
        ImportError: when onnxscript is not installed, saying what to install.
    """
    try:
        graph = _DynamoGraph()
    except ImportError as error:
        raise ImportError(f'the dynamo ONNX exporter needs onnxscript ({error}); install it with '
                          '`pip install onnxscript` or export with the TorchScript exporter') from error

    def dwconv2d_forward(x, weight, bias=None):
        return _depthwise(graph, x, weight, bias)

    def decomposed_dwconv2d_forward(x, w_long, w_wide, w_small=None, bias=None):
        return _decomposed(graph, x, (w_long, w_wide, w_small), bias, merge_decomposed)

    def peripheral_dwconv2d(x, weight, grid, bias=None):
        return _peripheral(graph, x, weight, grid, bias)

    ops = torch.ops.mmslak
    return {
        ops.dwconv2d_forward.default: dwconv2d_forward,
        ops.decomposed_dwconv2d_forward.default: decomposed_dwconv2d_forward,
        ops.peripheral_dwconv2d.default: peripheral_dwconv2d,
    }


def _optional(value):
    """A JIT value, or None where the op received None."""
    return None if value.node().mustBeNone() else value


def register_torchscript_symbolics(opset_version: int = DEFAULT_OPSET, merge_decomposed: bool = False):
    """Register the TorchScript exporter's symbolics of mmslak's ops (``torch.onnx.export(..., dynamo=False)``).

    Registering again replaces the previous symbolics (e.g. to change ``merge_decomposed``).

    Args:
        opset_version (int): the opset the export uses (9 to 20; Pad takes its pads as an input from 11).
        merge_decomposed (bool): see :func:`onnx_translation_table`.
    """
    from torch.onnx.symbolic_helper import parse_args

    @parse_args('v', 'v', 'v')
    def dwconv2d_forward(g, x, weight, bias):
        return _depthwise(_TorchScriptGraph(g), x, weight, _optional(bias))

    @parse_args('v', 'v', 'v', 'v', 'v')
    def decomposed_dwconv2d_forward(g, x, w_long, w_wide, w_small, bias):
        return _decomposed(_TorchScriptGraph(g), x, (w_long, w_wide, _optional(w_small)), _optional(bias),
                           merge_decomposed)

    @parse_args('v', 'v', 'is', 'v')
    def peripheral_dwconv2d(g, x, weight, grid, bias):
        return _peripheral(_TorchScriptGraph(g), x, weight, grid, _optional(bias))

    for name, symbolic in ((DEPTHWISE_OP, dwconv2d_forward), (DECOMPOSED_OP, decomposed_dwconv2d_forward),
                           (PERIPHERAL_OP, peripheral_dwconv2d)):
        torch.onnx.register_custom_op_symbolic(name, symbolic, opset_version)


def export_onnx(model: nn.Module,
                inputs: torch.Tensor,
                path: str,
                *,
                exporter: str = 'dynamo',
                dynamic: bool = False,
                opset_version: int = DEFAULT_OPSET,
                merge_decomposed: bool = False,
                input_name: str = 'input',
                output_names: Optional[Sequence[str]] = None) -> str:
    """Export ``model(inputs)`` to an ONNX file of standard operators.

    Args:
        model (nn.Module): the model in eval mode, taking one (N, 3, H, W) tensor and returning a tensor
            or a tuple of tensors.
        inputs (Tensor): the example input.
        path (str): the ``.onnx`` file to write (the dynamo exporter writes weights over 2 GB beside it).
        exporter (str): ``'dynamo'`` (torch's default, needs onnxscript) or ``'torchscript'``.
        dynamic (bool): make the input's height and width dynamic (and the batch size with the
            TorchScript exporter); adaptive average pooling is then exported shape-generically
            (:func:`~mmslak.deployment.wrappers.shape_generic_pooling`). Defaults to False.
        opset_version (int): ONNX opset. Defaults to 18.
        merge_decomposed (bool): see :func:`onnx_translation_table`.
        input_name (str): name of the input. Defaults to ``'input'``.
        output_names (Sequence[str], optional): names of the outputs.

    Returns:
        str: ``path``.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f'exporter must be one of {EXPORTERS}, got {exporter!r}')
    output_names = list(output_names) if output_names else None
    # with dynamic H and W, adaptive pooling must not be translated for the example's shape only
    pooling = shape_generic_pooling(model) if dynamic else nullcontext()
    with torch.no_grad(), pooling:
        if exporter == 'dynamo':
            dynamic_shapes = ({2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}, ) if dynamic else None
            program = torch.onnx.export(
                model, (inputs, ), dynamo=True, opset_version=opset_version, input_names=[input_name],
                output_names=output_names, dynamic_shapes=dynamic_shapes,
                custom_translation_table=onnx_translation_table(merge_decomposed), verbose=False)
            program.save(path)
        else:
            register_torchscript_symbolics(opset_version, merge_decomposed)
            dynamic_axes = None
            if dynamic:
                axes = {0: 'batch', 2: 'height', 3: 'width'}
                dynamic_axes = {input_name: axes}
            torch.onnx.export(model, (inputs, ), path, dynamo=False, opset_version=opset_version,
                              input_names=[input_name], output_names=output_names, dynamic_axes=dynamic_axes)
    return path


def onnx_op_types(path: Union[str, 'onnx.ModelProto']) -> Dict[str, int]:  # noqa: F821
    """Count the operators of an ONNX file by ``domain::type`` (``type`` alone for the standard domain)."""
    import onnx
    model = onnx.load(path) if isinstance(path, str) else path
    counts: Dict[str, int] = {}
    for node in model.graph.node:
        key = f'{node.domain}::{node.op_type}' if node.domain else node.op_type
        counts[key] = counts.get(key, 0) + 1
    return counts


def onnxruntime_session(path: str, threads: Optional[int] = None):
    """An ONNX Runtime CPU session of ``path`` (``threads`` intra-op threads; ONNX Runtime's default if None)."""
    import onnxruntime
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(path, options, providers=['CPUExecutionProvider'])


def relative_error(reference: torch.Tensor, result) -> float:
    """``max |result - reference| / max |reference|``: the error relative to the output's scale."""
    reference = reference.detach().double()
    result = torch.as_tensor(result).double()
    if result.shape != reference.shape:
        raise ValueError(f'shapes differ: reference {tuple(reference.shape)}, result {tuple(result.shape)}')
    return float((result - reference).abs().max() / reference.abs().max().clamp_min(torch.finfo(torch.float32).tiny))

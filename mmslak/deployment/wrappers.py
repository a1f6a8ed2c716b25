"""The tensor-in, tensors-out parts of OpenMMLab models that are exported to ONNX.

An exported graph takes the normalised image batch (N, 3, H, W), i.e. the output of the config's
``data_preprocessor`` (mean / std, RGB order), and returns tensors; what OpenMMLab does around the network
(loading, resizing, non-maximum suppression, data samples) stays outside.
"""
from contextlib import contextmanager
from typing import List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

PARTS = ('model', 'backbone', 'neck')


def model_task(model: nn.Module) -> str:
    """``'segmentation'``, ``'detection'``, ``'classification'`` or ``'backbone'`` (a bare backbone)."""
    if hasattr(model, 'decode_head'):
        return 'segmentation'
    if hasattr(model, 'rpn_head') or hasattr(model, 'roi_head') or hasattr(model, 'bbox_head'):
        return 'detection'
    if hasattr(model, 'head') and hasattr(model, 'backbone'):
        return 'classification'
    return 'backbone'


class ClassifierLogits(nn.Module):
    """An mmpretrain classifier returning its class logits (N, num_classes) (``mode='tensor'``)."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, inputs):
        return self.classifier(inputs, mode='tensor')


class SegmentorLogits(nn.Module):
    """An mmseg encoder-decoder returning its seg logits (N, num_classes, H, W) at the input's size.

    This is what ``EncoderDecoder.predict`` computes in ``'whole'`` mode before its argmax: the decode
    head's output resized bilinearly to the input (with the head's ``align_corners``).
    """

    def __init__(self, segmentor: nn.Module):
        super().__init__()
        self.segmentor = segmentor

    def forward(self, inputs):
        logits = self.segmentor(inputs, mode='tensor')
        return F.interpolate(logits, size=inputs.shape[2:], mode='bilinear',
                             align_corners=self.segmentor.decode_head.align_corners)


class Features(nn.Module):
    """A model's backbone, optionally followed by its neck, returning the tuple of feature maps."""

    def __init__(self, model: nn.Module, with_neck: bool):
        super().__init__()
        self.backbone = model.backbone
        self.neck = model.neck if with_neck else None

    def forward(self, inputs):
        features = self.backbone(inputs)
        if self.neck is not None:
            features = self.neck(features)
        return tuple(features)


def default_part(model: nn.Module) -> str:
    """The part exported by default: the whole model, but backbone + neck for a detector."""
    return 'neck' if model_task(model) == 'detection' else 'model'


def exportable(model: nn.Module, part: str = None) -> Tuple[nn.Module, str, List[str]]:
    """Wrap the part of ``model`` to export as a module taking the image batch and returning tensors.

    Args:
        model (nn.Module): an mmpretrain classifier, mmseg segmentor or mmdet detector (or a backbone).
        part (str, optional): ``'model'`` (classifier logits, segmentor seg logits), ``'backbone'`` or
            ``'neck'`` (backbone + neck); by default :func:`default_part`.

    Returns:
        tuple: the module (in eval mode, like ``model``'s submodules must be), a description of what it
        returns, and the prefix of its output names (``'logits'``, ``'seg_logits'``, ``'backbone'`` or
        ``'neck'``; tuple outputs get ``_0``, ``_1``, ...).

    Raises:
        ValueError: for a part the model does not have, saying which parts it has.
    """
    module, what, prefix = _select(model, part or default_part(model))
    return module.eval(), what, prefix


def _select(model, part):
    task = model_task(model)
    if part not in PARTS:
        raise ValueError(f'part must be one of {PARTS}, got {part!r}')
    if task == 'backbone':
        if part != 'backbone':
            raise ValueError(f'a bare {type(model).__name__} has no {part!r} part; use part="backbone"')
        return model, 'backbone feature maps', 'backbone'
    if part == 'model':
        if task == 'classification':
            return ClassifierLogits(model), 'class logits (N, num_classes)', 'logits'
        if task == 'segmentation':
            return SegmentorLogits(model), 'seg logits (N, num_classes, H, W)', 'seg_logits'
        raise ValueError('a detector is exported as backbone + neck (part "neck") or backbone: its RPN, RoI '
                         'heads and non-maximum suppression are post-processing that ONNX Runtime would '
                         'run on dynamic box counts, outside what this tool checks')
    if part == 'neck' and getattr(model, 'neck', None) is None:
        raise ValueError(f'{type(model).__name__} has no neck; use part "backbone" or "model"')
    what = 'backbone + neck feature maps' if part == 'neck' else 'backbone feature maps'
    return Features(model, with_neck=part == 'neck'), what, part


class DynamicAdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d`` written with shape-generic operators, for exports with dynamic H and W.

    torch's ONNX exporters translate adaptive pooling into an ``AveragePool`` whose kernel and stride come
    from the export shape, which is wrong at any other shape (UperNet's pyramid pooling module gave 29%
    relative error). Bin ``i`` of ``n`` over a side of length ``L`` averages ``[floor(i L / n),
    ceil((i + 1) L / n))``, PyTorch's definition, computed here from cumulative sums along each axis
    (averaging over a rectangle is averaging the row averages).

    Args:
        output_size (int | tuple[int, int]): the number of bins along H and W.
    """

    def __init__(self, output_size):
        super().__init__()
        self.output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)

    @staticmethod
    def _pool(x, bins, dim):
        length = x.shape[dim]
        index = torch.arange(bins, device=x.device)
        start = index * length // bins
        end = ((index + 1) * length + bins - 1) // bins
        prefix = torch.cat([torch.zeros_like(x.narrow(dim, 0, 1)), x.cumsum(dim)], dim)
        sums = prefix.index_select(dim, end) - prefix.index_select(dim, start)
        counts = (end - start).to(x.dtype).reshape([-1] + [1] * (x.dim() - 1 - dim))
        return sums / counts

    def forward(self, x):
        return self._pool(self._pool(x, self.output_size[0], 2), self.output_size[1], 3)


@contextmanager
def shape_generic_pooling(module: nn.Module):
    """Temporarily replace ``module``'s ``nn.AdaptiveAvgPool2d`` layers of more than one bin by
    :class:`DynamicAdaptiveAvgPool2d` (one bin is a mean, which the exporters translate correctly)."""
    replaced = []
    for parent in module.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.AdaptiveAvgPool2d) and None not in _pair(child.output_size) and \
                    _pair(child.output_size) != (1, 1):
                setattr(parent, name, DynamicAdaptiveAvgPool2d(child.output_size))
                replaced.append((parent, name, child))
    try:
        yield module
    finally:
        for parent, name, child in replaced:
            setattr(parent, name, child)


def _pair(size):
    return (size, size) if isinstance(size, int) else tuple(size)

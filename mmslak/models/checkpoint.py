"""Convert official SLaK checkpoints to mmslak's (mmengine / mmpretrain) layout, and validate them.

Accepted state dicts (all may be mixed with already-converted keys; conversion is idempotent):

* the official classifier (``model`` or ``model_ema`` of the release): ``downsample_layers.*``,
  ``stages.*``, ``norm.*``, ``head.*``;
* official downstream (detection / segmentation) ``state_dict``: ``backbone.*`` plus the task's own heads,
  which :func:`slak_state_dict_from_checkpoint` drops (only the backbone is carried over);
* older releases naming the decomposed branches ``Decom1`` / ``Decom2`` instead of ``LoRA1`` / ``LoRA2``.

The result uses the names of an mmpretrain ``ImageClassifier`` with a :class:`~mmslak.models.SLaK`
backbone and a ``LinearClsHead``: ``backbone.*`` (the final ``norm`` becomes ``backbone.norm3``) and
``head.fc.*``.
"""
import re
from collections import OrderedDict

import torch

BACKBONE_PREFIX = 'backbone.'
OLD_BRANCH_NAMES = {'.Decom1.': '.LoRA1.', '.Decom2.': '.LoRA2.'}
_BACKBONE_BODY = re.compile(r'^(downsample_layers|stages|norm\d)\.')


def convert_slak_state_dict(state_dict):
    """Rename an official SLaK state dict to mmslak's classifier layout (idempotent).

    Keys outside every accepted layout are kept unchanged, so that :func:`check_slak_state_dict`
    reports them.

    Args:
        state_dict (Mapping[str, Tensor]): a state dict in any of the accepted layouts.

    Returns:
        OrderedDict: the converted state dict.
    """
    converted = OrderedDict()
    for key, value in state_dict.items():
        if key.startswith('head.') and not key.startswith('head.fc.'):
            key = 'head.fc.' + key[len('head.'):]
        elif key.startswith('norm.'):
            key = BACKBONE_PREFIX + 'norm3.' + key[len('norm.'):]
        elif _BACKBONE_BODY.match(key):
            key = BACKBONE_PREFIX + key
        for old, new in OLD_BRANCH_NAMES.items():
            key = key.replace(old, new)
        converted[key] = value
    return converted


def slak_state_dict_from_checkpoint(checkpoint, ema=False):
    """Pick the model weights out of a loaded checkpoint and convert them.

    Args:
        checkpoint (dict): an official classification checkpoint (``model``, optionally
            ``model_ema``), an mmengine checkpoint or an official downstream one (``state_dict``), or a
            bare state dict.
        ema (bool): take ``model_ema`` instead of ``model``.

    Returns:
        tuple[OrderedDict, list[str]]: the converted state dict and the dropped keys: a downstream
        checkpoint's necks and task heads (everything outside ``backbone.`` and ``head.``).
    """
    if ema and 'model_ema' not in checkpoint:
        raise ValueError(f'--ema: the checkpoint has no model_ema (it has {sorted(checkpoint)})')
    source = 'model_ema' if ema else next((k for k in ('model', 'state_dict') if k in checkpoint), None)
    if source is not None:
        state_dict = checkpoint[source]
    elif all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        state_dict = checkpoint
    else:
        raise ValueError(f'no model weights found: expected model, model_ema or state_dict among the keys '
                         f'{sorted(checkpoint)}')
    dropped = []
    if source == 'state_dict':
        dropped = [k for k in state_dict if not k.startswith((BACKBONE_PREFIX, 'head.'))]
        state_dict = {k: v for k, v in state_dict.items() if k.startswith((BACKBONE_PREFIX, 'head.'))}
    return convert_slak_state_dict(state_dict), dropped


def _shape(state_dict, key):
    if key not in state_dict:
        raise ValueError(f'cannot infer the SLaK architecture: missing key {key}')
    return tuple(state_dict[key].shape)


def infer_slak_config(state_dict):
    """Infer the keyword arguments of :class:`~mmslak.models.SLaK` from a converted state dict.

    Args:
        state_dict (Mapping[str, Tensor]): output of :func:`convert_slak_state_dict`.

    Returns:
        dict: ``SLaK`` arguments (``arch`` as a dict with final widths, ``width_factor=1.0``), plus
        ``num_classes`` when the state dict has a classification head.
    """
    p = BACKBONE_PREFIX
    stem = _shape(state_dict, f'{p}downsample_layers.0.0.weight')
    widths = [stem[0]] + [_shape(state_dict, f'{p}downsample_layers.{i}.1.weight')[0] for i in (1, 2, 3)]
    keys = list(state_dict)

    def first_key(pattern):
        # Inference looks at every block, so that one missing key is reported as missing rather than
        # changing the inferred architecture.
        return next((k for k in keys if re.fullmatch(pattern, k)), None)

    depths, kernels, shorts = [], [], []
    for s in range(4):
        block_ids = (re.match(rf'{re.escape(p)}stages\.{s}\.(\d+)\.', k) for k in keys)
        blocks = {int(m.group(1)) for m in block_ids if m}
        depths.append(max(blocks) + 1 if blocks else 0)
        lk = rf'{re.escape(p)}stages\.{s}\.\d+\.large_kernel\.'
        long_key = first_key(lk + r'(LoRA1\.conv\.weight|long_weight)')
        square_key = first_key(lk + r'(lkb_origin\.conv\.weight|weight)')
        small_key = first_key(lk + r'small_conv\.conv\.weight')
        if long_key is not None:
            kernels.append(state_dict[long_key].shape[2])
            shorts.append(state_dict[long_key].shape[3])
        elif square_key is not None:
            kernels.append(state_dict[square_key].shape[2])
            shorts.append(state_dict[small_key].shape[2] if small_key is not None else None)
        else:
            raise ValueError(f'cannot infer the kernel size of stage {s}: no LoRA1 or lkb_origin weights')
    known_shorts = {n for n, k in zip(shorts, kernels) if n is not None and n < k}
    if len(known_shorts) > 1:
        raise ValueError(f'the stages use different short kernel sides {sorted(known_shorts)}')
    pwconv1 = first_key(rf'{re.escape(p)}stages\.0\.\d+\.pwconv1\.weight')
    if pwconv1 is None:
        raise ValueError('cannot infer the MLP width: no pwconv1 weights in stage 0')
    norms = (re.match(rf'{re.escape(p)}norm(\d)\.weight$', k) for k in keys)
    config = dict(
        arch=dict(depths=depths, widths=widths),
        width_factor=1.0,
        kernel_size=tuple(kernels),
        short_kernel=known_shorts.pop() if known_shorts else min(5, min(kernels)),
        decompose=any('.large_kernel.LoRA1.' in k or k.endswith('.large_kernel.long_weight') for k in keys),
        branch_bn=any('.large_kernel.' in k and '.bn.' in k for k in keys),
        deploy=any(k.endswith('.large_kernel.bias') for k in keys),
        in_channels=stem[1],
        stem_patch_size=stem[2],
        mlp_ratio=state_dict[pwconv1].shape[0] / widths[0],
        layer_scale_init_value=1e-6 if any(k.endswith('.gamma') for k in keys) else 0.,
        out_indices=sorted(int(m.group(1)) for m in norms if m))
    if 'head.fc.weight' in state_dict:
        config['num_classes'] = _shape(state_dict, 'head.fc.weight')[0]
    return config


def check_slak_state_dict(state_dict):
    """Check that a converted state dict is exactly a SLaK classifier's (or backbone's) weights.

    Builds the SLaK backbone the weights describe (on the meta device, so it costs no memory) and
    compares names and shapes.

    Args:
        state_dict (Mapping[str, Tensor]): output of :func:`convert_slak_state_dict`.

    Returns:
        dict: the inferred configuration (see :func:`infer_slak_config`).

    Raises:
        ValueError: listing every unknown, missing or wrongly shaped key.
    """
    from .backbones import SLaK

    config = infer_slak_config(state_dict)
    backbone_args = {k: v for k, v in config.items() if k != 'num_classes'}
    if not backbone_args['out_indices']:
        raise ValueError(f'missing keys: {BACKBONE_PREFIX}norm3.weight, {BACKBONE_PREFIX}norm3.bias '
                         '(the final norm)')
    with torch.device('meta'):
        backbone = SLaK(**backbone_args)
    expected = {BACKBONE_PREFIX + k: tuple(v.shape) for k, v in backbone.state_dict().items()}
    if 'num_classes' in config:
        expected['head.fc.weight'] = (config['num_classes'], backbone.widths[-1])
        expected['head.fc.bias'] = (config['num_classes'], )
    problems = []
    unknown = sorted(set(state_dict) - set(expected))
    missing = sorted(set(expected) - set(state_dict))
    wrong = sorted(f'{k} {tuple(state_dict[k].shape)} (expected {expected[k]})'
                   for k in set(expected) & set(state_dict) if tuple(state_dict[k].shape) != expected[k])
    for title, keys in (('unknown keys', unknown), ('missing keys', missing), ('wrong shapes', wrong)):
        if keys:
            problems.append(f'{title} ({len(keys)}): ' + ', '.join(keys))
    if problems:
        raise ValueError('not a SLaK checkpoint of a consistent architecture; ' + '; '.join(problems))
    return config

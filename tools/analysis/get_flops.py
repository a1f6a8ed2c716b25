"""Parameters and FLOPs of a model built from a config: dense, and counting only non-zero weights.

Usage:
    python tools/analysis/get_flops.py CONFIG [--shape H W] [--checkpoint CKPT] [--sparsity S]

FLOPs are multiply-accumulates of the convolutions and linear layers (the convention of fvcore, used by
the ConvNeXt, SLaK and PeLK papers); norms, activations and element-wise ops are not counted, and a
kernel counts at every output position (padding is not discounted). Every 4-D weight (O, I/g, kh, kw) is
a convolution and every 2-D weight (O, I) a linear layer, applied at each of the (output elements / O)
positions of the module that holds it (its nearest ancestor that ran, when the module calls the op
functionally); a transposed convolution's weight (I, O/g, kh, kw) counts at each of its input positions.
A two-stage detector runs at its test-time worst case: the box heads of every stage on
``test_cfg.rpn.max_per_img`` regions, the mask heads on ``test_cfg.rcnn.max_per_img`` (the papers'
convention). The forward runs on the meta device, so any input size costs no computation. A module
whose parameters expand into other kernels (e.g. a peripheral convolution) reports the depthwise kernels
it convolves with through a ``complexity_kernels()`` method, each counted at every position (N * H * W)
of the module's (N, C, H, W) output, even when only some of the C channels are convolved; its own
parameters are then not counted as kernels.

The non-zero figures count only weights that are not zero:

* with ``--checkpoint``, the actual weights of the checkpoint (e.g. a sparse-trained one);
* otherwise, the weights that sparse training would mask (the config's ``SparseTrainingHook``: its
  ``sparsity`` and ``params``; ``--sparsity`` overrides) are counted at that uniform sparsity, and so are
  the kernels a module expands its sparse kernels into (a peripheral convolution's K x K kernel). SLaK's
  reported 30M / 5.0G for SLaK-T are such non-zero figures at 40% sparsity; the actual layer-wise
  densities of SNIP differ, so only a checkpoint gives the exact non-zero FLOPs.
"""
import argparse
import copy

import torch
from mmengine.config import Config, DictAction
from mmengine.model import BaseModel
from mmengine.registry import MODELS, init_default_scope
from mmengine.runner import load_checkpoint
from mmengine.utils import import_modules_from_strings


def build_model(config, cfg_options=None):
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(cfg.get('default_scope', 'mmslak'))
    return cfg, MODELS.build(cfg.model)


def sparse_setting(cfg, sparsity=None):
    """(sparsity, params scope) of the config's SparseTrainingHook, ``sparsity`` overriding; or None."""
    hook = next((h for h in cfg.get('custom_hooks', []) if h.get('type') in
                 ('SparseTrainingHook', 'mmslak.SparseTrainingHook')), {})
    if sparsity is None:
        sparsity = hook.get('sparsity')
    if sparsity is None:
        return None
    return float(sparsity), hook.get('params', 'backbone')


TRANSPOSED_CONVS = (torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)


def _stage(modules, index):
    """The ``index``-th stage's module of a cascade (a ModuleList), or the one module of a single stage."""
    return modules[index] if isinstance(modules, torch.nn.ModuleList) else modules


def _roi_features(extractor, num_rois, device):
    """Features of ``num_rois`` regions as ``extractor`` (an mmdet SingleRoIExtractor) pools them."""
    return torch.zeros(num_rois, extractor.out_channels, *extractor.roi_layers[0].output_size, device=device)


def _run_two_stage_detector(model, inputs):
    """A two-stage detector at its test-time worst case, independent of what the weights propose.

    The box heads of every stage run on ``test_cfg.rpn.max_per_img`` regions (the most the RPN keeps) and the
    mask heads of every stage on ``test_cfg.rcnn.max_per_img`` (the most the detector outputs), as mmdet's
    inference does at most. The region pooling has no weights, so the heads take pooled features of the
    right shape directly. This is also how the papers count (mmdet 2.x's ``forward_dummy``: 1000 and 100).
    """
    features = model.extract_feat(inputs)
    model.rpn_head(features)
    roi_head, test_cfg = model.roi_head, model.test_cfg
    for stage in range(getattr(roi_head, 'num_stages', 1)):
        _stage(roi_head.bbox_head, stage)(
            _roi_features(_stage(roi_head.bbox_roi_extractor, stage), test_cfg.rpn.max_per_img, inputs.device))
        if roi_head.with_mask:
            _stage(roi_head.mask_head, stage)(
                _roi_features(_stage(roi_head.mask_roi_extractor, stage), test_cfg.rcnn.max_per_img,
                              inputs.device))


def _run(model, inputs):
    if not isinstance(model, BaseModel):
        return model(inputs)
    if type(model).__module__.startswith('mmdet.'):
        from mmdet.models.detectors import TwoStageDetector
        if isinstance(model, TwoStageDetector):
            return _run_two_stage_detector(model, inputs)
        from mmdet.structures import DetDataSample
        shape = tuple(inputs.shape[2:])
        data_samples = [DetDataSample(metainfo=dict(img_shape=shape, ori_shape=shape, pad_shape=shape,
                                                    batch_input_shape=shape, scale_factor=(1., 1.)))
                        for _ in range(inputs.shape[0])]
        return model(inputs, data_samples, mode='tensor')
    return model(inputs, None, mode='tensor')


@torch.no_grad()
def count_complexity(model, input_shape, nonzero_fraction=None):
    """Count parameters and multiply-accumulates of one forward of an input of ``input_shape``.

    The forward runs on a copy of the model on the meta device: only the shapes of the outputs are needed,
    so a full-size detector at 1280x800 costs no computation.

    Args:
        model (nn.Module): the model (run in eval mode).
        input_shape (tuple[int]): the shape of the input batch, (N, 3, H, W).
        nonzero_fraction (dict[str, float], optional): assume instead of counting zeros: parameter name
            -> fraction of non-zero entries, parameters not named being dense. By default the zeros of
            the actual weights are counted.

    Returns:
        dict: ``params``, ``params_nonzero``, ``flops``, ``flops_nonzero`` (totals for the batch).
    """
    shape_model = copy.deepcopy(model).to('meta').eval()
    names = {module: name for name, module in shape_model.named_modules()}
    outputs = {}  # module name -> [output elements, output positions (N * H * W for NCHW)], summed over calls

    def record(module, args, output):
        if isinstance(module, TRANSPOSED_CONVS):
            # its weight (C_in, C_out / g, kh, kw) meets every input position once
            output = args[0]
        if isinstance(output, (tuple, list)):
            output = output[0]
        if isinstance(output, torch.Tensor) and output.dim() > 1:
            counts = outputs.setdefault(names[module], [0, 0])
            counts[0] += output.numel()
            counts[1] += output.numel() // (output.shape[1] if output.dim() == 4 else output.shape[-1])

    for module in names:
        module.register_forward_hook(record)
    _run(shape_model, torch.empty(input_shape, device='meta'))

    def count_nonzero(name, tensor):
        if nonzero_fraction is None:
            return int(torch.count_nonzero(tensor))
        return tensor.numel() * nonzero_fraction.get(name, 1.)

    def output_counts(module_name):
        # The module itself, or the nearest ancestor that ran.
        parts = module_name.split('.') if module_name else []
        for end in range(len(parts), -1, -1):
            if '.'.join(parts[:end]) in outputs:
                return outputs['.'.join(parts[:end])]
        return [0, 0]

    def assumed_kernel_fraction(module_name, module):
        if nonzero_fraction is None:
            return 1.
        kernels = [(f'{module_name}.{name}', param.numel()) for name, param in module.named_parameters()
                   if param.dim() == 4]
        total = sum(numel for _, numel in kernels)
        return sum(numel * nonzero_fraction.get(name, 1.) for name, numel in kernels) / total if total else 1.

    result = dict(params=0, params_nonzero=0, flops=0, flops_nonzero=0)
    expanded = set()
    for module_name, module in model.named_modules():
        if callable(getattr(module, 'complexity_kernels', None)):
            expanded.add(module_name)
            positions = output_counts(module_name)[1]
            # Under an assumed sparsity the expanded kernels are as sparse as the kernels they expand from.
            fraction = assumed_kernel_fraction(module_name, module)
            for kernel in module.complexity_kernels():
                result['flops'] += positions * kernel.numel()
                result['flops_nonzero'] += positions * int(torch.count_nonzero(kernel)) * fraction
    for name, param in model.named_parameters():
        result['params'] += param.numel()
        nonzero = count_nonzero(name, param)
        result['params_nonzero'] += nonzero
        module_name = name.rpartition('.')[0]
        inside_expanded = any(module_name == m or module_name.startswith(m + '.') for m in expanded if m)
        if param.dim() in (2, 4) and not inside_expanded:
            positions = output_counts(module_name)[0] // param.shape[0]
            result['flops'] += positions * param.numel()
            result['flops_nonzero'] += positions * nonzero
    result['params_nonzero'] = round(result['params_nonzero'])
    result['flops_nonzero'] = round(result['flops_nonzero'])
    return result


def uniform_sparsity_fractions(model, sparsity, scope):
    from mmslak.engine.sparse.param_selection import select_sparse_params
    return {name: 1. - sparsity for name, _ in select_sparse_params(model, scope)}


def format_report(result, config, shape, nonzero_label):
    rows = [('parameters', result['params'], result['params_nonzero'], 'M', 1e6),
            ('FLOPs (MACs)', result['flops'], result['flops_nonzero'], 'G', 1e9)]
    lines = [f'config: {config}', f'input: 1x3x{shape[0]}x{shape[1]}', f'non-zero: {nonzero_label}',
             f'{"":14}{"dense":>26}{"non-zero":>26}']
    for title, dense, nonzero, unit, scale in rows:
        lines.append(f'{title:14}{dense:>16,} ({dense / scale:6.2f}{unit}){nonzero:>16,} '
                     f'({nonzero / scale:6.2f}{unit})')
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description='Parameters and FLOPs, dense and non-zero.')
    parser.add_argument('config')
    parser.add_argument('--shape', type=int, nargs=2, default=[224, 224], metavar=('H', 'W'))
    parser.add_argument('--checkpoint', help='count the non-zero weights of this checkpoint')
    parser.add_argument('--sparsity', type=float,
                        help='assumed uniform sparsity of the sparse weights (default: the config\'s '
                        'SparseTrainingHook); ignored with --checkpoint')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(argv)

    cfg, model = build_model(args.config, args.cfg_options)
    fractions, label = {}, 'no sparsity configured: all weights dense'
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True)
        fractions, label = None, f'the actual zeros of {args.checkpoint}'
    elif (setting := sparse_setting(cfg, args.sparsity)) is not None:
        sparsity, scope = setting
        fractions = uniform_sparsity_fractions(model, sparsity, scope)
        label = f'{sparsity:.0%} uniform sparsity of the sparse-trained weights (params={scope!r})'
    result = count_complexity(model, (1, 3, *args.shape), fractions)
    print(format_report(result, args.config, args.shape, label))
    return result


if __name__ == '__main__':
    main()

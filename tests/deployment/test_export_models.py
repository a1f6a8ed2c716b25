"""tools/deployment/pytorch2onnx.py on whole models, checked here against the models' own PyTorch outputs.

SLaK-T and PeLK-T classifiers at full size (trained form in eval mode, and after ``--deploy``), the toy
UperNet segmentor (seg logits) and a toy detector's backbone + neck are exported with dynamic height and
width at 64x64, and ONNX Runtime runs the one file at 64x64 and at 96x128. The reference is the model
that was saved to the checkpoint, run by its own OpenMMLab method (``mode='tensor'``,
``encode_decode``, ``extract_feat``) in its trained form: a deployed export must also equal the
unfused model. BatchNorm statistics and layer scales are randomised first, so that folding them and the
large-kernel branches matter to the output.
"""
import importlib.util
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope

from mmslak.deployment import onnx_op_types, onnxruntime_session

pytest.importorskip('onnxruntime')
pytest.importorskip('onnxscript')

REPO = Path(__file__).resolve().parents[2]
SIZES = [(64, 64), (96, 128)]
RTOL = 1e-4


def load_tool():
    spec = importlib.util.spec_from_file_location('pytorch2onnx', REPO / 'tools' / 'deployment' / 'pytorch2onnx.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(config, **backbone_options):
    cfg = Config.fromfile(str(REPO / config))
    cfg.model.backbone.update(backbone_options)
    init_default_scope(cfg.default_scope)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith(('running_mean', 'bn.bias')):
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
            elif name.endswith(('running_var', 'bn.weight', 'gamma')):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
    return cfg, model.eval()


def export(tmp_path, config, model, *options, backbone_options=None):
    checkpoint = tmp_path / 'model.pth'
    torch.save({'state_dict': model.state_dict()}, checkpoint)
    out = tmp_path / 'model.onnx'
    cfg_options = [f'model.backbone.{key}={value}' for key, value in (backbone_options or {}).items()]
    argv = [str(REPO / config), str(checkpoint), '--out', str(out), '--shape', '64', '64', '--dynamic',
            '--check-shape', '96', '128', '--repeat', '1', *options]
    if cfg_options:
        argv += ['--cfg-options', *cfg_options]
    assert load_tool().main(argv) == 0
    counts = onnx_op_types(str(out))
    assert not [op for op in counts if '::' in op], f'non-standard operators: {counts}'
    return str(out), counts


def assert_matches(session, reference_fn):
    for height, width in SIZES:
        x = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(height))
        with torch.no_grad():
            expected = reference_fn(x)
        expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
        results = session.run(None, {'input': x.numpy()})
        assert len(results) == len(expected)
        for result, reference in zip(results, expected):
            result = torch.from_numpy(result)
            assert result.shape == reference.shape
            error = (result - reference).abs().max() / reference.abs().max()
            assert error <= RTOL, f'{height}x{width}: relative error {error:.2e}'


CLASSIFIERS = {
    'slak': 'configs/slak/slak-tiny_in1k.py',
    'pelk': 'configs/pelk/pelk-tiny_in1k.py',
}


@pytest.mark.slow
@pytest.mark.parametrize('family, deploy, backbone_options', [
    ('slak', False, {}),
    ('slak', True, {}),
    ('pelk', False, {}),
    ('pelk', True, {}),
    ('pelk', True, {'pos_embed': None}),  # deployed kernels stay in cell form: the peripheral op
], ids=['slak-t', 'slak-t-deploy', 'pelk-t', 'pelk-t-deploy', 'pelk-t-no-embed-deploy'])
def test_classifier_exports_and_matches_at_two_sizes(tmp_path, family, deploy, backbone_options):
    config = CLASSIFIERS[family]
    _, model = build(config, **backbone_options)
    path, counts = export(tmp_path, config, model, *(['--deploy'] if deploy else []),
                          backbone_options=backbone_options)
    blocks = sum(model.backbone.depths)
    if deploy:
        # stem and 3 downsampling convs, then per block 2 Convs (the (K, 5) and (5, K) kernels; the 5x5 is
        # folded into the first) for SLaK, 1 for PeLK
        assert counts['Conv'] == 4 + (2 if family == 'slak' else 1) * blocks, counts
    assert_matches(onnxruntime_session(path), lambda x: model(x, mode='tensor'))


@pytest.mark.slow
def test_deployed_slak_with_merged_kernels_is_one_conv_per_block(tmp_path):
    config = CLASSIFIERS['slak']
    _, model = build(config)
    path, counts = export(tmp_path, config, model, '--deploy', '--merge-decomposed')
    assert counts['Conv'] == 4 + sum(model.backbone.depths), counts
    assert_matches(onnxruntime_session(path), lambda x: model(x, mode='tensor'))


@pytest.mark.slow
def test_deployed_slak_through_the_torchscript_exporter(tmp_path):
    config = CLASSIFIERS['slak']
    _, model = build(config)
    path, counts = export(tmp_path, config, model, '--deploy', '--exporter', 'torchscript')
    assert_matches(onnxruntime_session(path), lambda x: model(x, mode='tensor'))


@pytest.mark.slow
@pytest.mark.parametrize('deploy', [False, True], ids=['trained', 'deploy'])
def test_toy_upernet_exports_seg_logits(tmp_path, deploy):
    config = 'configs/toy/upernet_slak-toy_1xb8-1000iter_toy-ade-128x128.py'
    cfg, model = build(config)
    path, _ = export(tmp_path, config, model, *(['--deploy'] if deploy else []))
    session = onnxruntime_session(path)
    assert session.get_outputs()[0].name == 'seg_logits'

    def seg_logits(x):
        shape = tuple(x.shape[2:])
        metas = [dict(img_shape=shape, ori_shape=shape, pad_shape=shape)]
        return model.encode_decode(x, metas)

    assert seg_logits(torch.zeros(1, 3, 64, 64)).shape[1] == cfg.model.decode_head.num_classes
    assert_matches(session, seg_logits)


@pytest.mark.slow
def test_toy_detector_exports_backbone_and_neck(tmp_path):
    config = 'configs/toy/faster-rcnn_pelk-toy_fpn_1xb4-8e_toy-voc.py'
    cfg, model = build(config)
    path, _ = export(tmp_path, config, model)
    session = onnxruntime_session(path)
    assert len(session.get_outputs()) == cfg.model.neck.num_outs
    assert_matches(session, model.extract_feat)


@pytest.mark.parametrize('argv, message', [
    (['configs/missing.py', '--out', 'x.onnx'], 'config file not found: configs/missing.py'),
    (['configs/slak/slak-tiny_in1k.py', '--out', 'x.onnx', '--check-shape', '96', '96'],
     '--check-shape needs --dynamic'),
    (['configs/slak/slak-tiny_in1k.py', '--out', 'x.onnx', '--shape', '16', '64'], 'must be at least 32 32'),
    (['configs/toy/faster-rcnn_pelk-toy_fpn_1xb4-8e_toy-voc.py', '--out', 'x.onnx', '--part', 'model'],
     'a detector is exported as backbone + neck'),
])
def test_bad_command_lines_exit_2_with_one_line(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(REPO)
    argv = [str(tmp_path / arg) if arg == 'x.onnx' else arg for arg in argv]
    with pytest.raises(SystemExit) as exit_info:
        load_tool().main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and message in error[0]

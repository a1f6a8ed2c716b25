"""A normal run prints no warnings that the user cannot act on; the ones about their own input stay."""
import textwrap

import pytest
from tool_runs import ROOT, run, write_image_folder
from tool_runs import TINY_CLASSIFIER as CONFIG

TOY_ADE = ROOT / 'configs/toy/upernet_slak-toy_1xb8-1000iter_toy-ade-128x128.py'
STACK_NOISE = ('pkg_resources is deprecated', '"FileClient" will be deprecated', '"HardDiskBackend" is the alias')


def test_training_run_prints_no_stack_warnings(tmp_path):
    # an mmpretrain:: base makes mmengine import (and reload) pkg_resources, which warned twice per run
    config = tmp_path / 'with_stock_base.py'
    config.write_text("_base_ = ['mmpretrain::_base_/default_runtime.py']\n" + CONFIG.read_text())
    images = write_image_folder(tmp_path / 'images')
    result = run('tools/train.py', config, '--work-dir', tmp_path / 'run', '--cfg-options',
                 f'train_dataloader.dataset.data_root={images}', 'train_cfg.max_iters=1')
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert 'Iter(train) [1/1]' in output and (tmp_path / 'run/iter_1.pth').exists()
    assert [noise for noise in STACK_NOISE if noise in output] == []


INFERENCER = textwrap.dedent('''
    import sys
    from mmseg.apis import MMSegInferencer
    import mmslak
    from mmslak.utils.quiet import build_inferencer
    if sys.argv[1] == 'quiet':
        build_inferencer(MMSegInferencer, model=sys.argv[2], device='cpu')
    else:
        MMSegInferencer(model=sys.argv[2], device='cpu')
    print('built')
''')


@pytest.mark.slow
def test_build_inferencer_drops_the_scope_warnings_only():
    plain = run('-c', INFERENCER, 'plain', TOY_ADE)
    quiet = run('-c', INFERENCER, 'quiet', TOY_ADE)
    for result in (plain, quiet):
        assert result.returncode == 0 and 'built' in result.stdout, result.stderr[-3000:]
    scope_noise = ('Failed to search registry with scope "mmseg"', 'pkg_resources is deprecated',
                   'Failed to add <class \'mmengine.visualization.vis_backend.LocalVisBackend\'>')
    assert all(noise in plain.stdout + plain.stderr for noise in scope_noise)  # what users saw
    assert [noise for noise in scope_noise if noise in quiet.stdout + quiet.stderr] == []
    # no weights were given: that warning concerns the call and stays
    assert 'Checkpoint is not loaded' in quiet.stderr

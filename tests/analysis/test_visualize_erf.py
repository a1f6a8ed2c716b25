"""tools/analysis/visualize_erf.py: an analytic ERF, hand-computed square areas, SLaK-T / PeLK-T maps, errors."""
import numpy as np
import pytest
import torch
import torch.nn as nn
from analysis_tools import REPO, load_tool, tiny_slak_config
from PIL import Image

erf_tool = load_tool('visualize_erf')


class OneStage(nn.Module):
    """A backbone of one stage."""

    def __init__(self, stage):
        super().__init__()
        self.stages = nn.ModuleList([stage])

    def forward(self, x):
        return self.stages[0](x)


class Sqrt(nn.Module):

    def forward(self, x):
        return x.sqrt()


def write_images(directory, count, size=40, seed=0):
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        pixels = rng.integers(0, 256, size=(size, size + 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(directory / f'image_{index}.png')
    return str(directory)


def test_erf_of_one_depthwise_conv_is_its_relu_kernel_inside_the_window_and_zero_outside():
    """d relu(out[c, cy, cx]) / d x[c, cy + i - r, cx + j - r] = kernel[c, i, j] where out[c, cy, cx] > 0, else 0;
    the ReLU'd gradient summed over channels and averaged over images is written out from that."""
    torch.manual_seed(0)
    channels, k, size, count = 3, 7, 33, 4
    model = OneStage(nn.Conv2d(channels, channels, k, padding=k // 2, groups=channels, bias=False).double())
    images = [torch.randn(1, channels, size, size, dtype=torch.float64) for _ in range(count)]
    raw, used, skipped = erf_tool.mean_contribution(model, iter(images), count)

    kernel = model.stages[0].weight.detach()[:, 0].numpy()
    r, centre = k // 2, size // 2
    expected = np.zeros((size, size))
    for image in images:
        patch = image[0, :, centre - r:centre + r + 1, centre - r:centre + r + 1].numpy()
        active = (kernel * patch).sum((1, 2)) > 0  # channels whose central output passes the ReLU
        expected[centre - r:centre + r + 1, centre - r:centre + r + 1] += np.maximum(kernel[active], 0).sum(0)
    expected /= count

    assert (used, skipped) == (count, 0)
    np.testing.assert_allclose(raw, expected, rtol=0, atol=1e-12)
    outside = np.ones((size, size), bool)
    outside[centre - r:centre + r + 1, centre - r:centre + r + 1] = False
    assert raw[outside].max() == 0 and raw[~outside].max() > 0
    erf = erf_tool.normalise(raw)
    assert erf[outside].max() == 0 and erf.max() == 1
    # All of the map is in the window: at most the k x k square holds any share of it.
    assert all(side <= k for _, side, _ in erf_tool.high_contribution_area(erf))


def test_nan_images_are_skipped_and_the_next_one_read():
    """sqrt at 0 has an infinite derivative: relu'(0) * inf = NaN at the centre of the image whose centre is 0."""
    model = OneStage(Sqrt())
    good = torch.ones(1, 2, 9, 9, dtype=torch.float64)
    bad = good.clone()
    bad[0, :, 4, 4] = 0
    raw, used, skipped = erf_tool.mean_contribution(model, iter([bad, good, good]), 2)
    assert (used, skipped) == (2, 1)
    expected = np.zeros((9, 9))
    expected[4, 4] = 2 * 0.5  # two channels, d sqrt(x) / dx = 0.5 at x = 1
    np.testing.assert_array_equal(raw, expected)


def test_high_contribution_area_by_hand():
    # A point at the centre: side 1 for every share.
    point = np.zeros((9, 9))
    point[4, 4] = 1
    assert erf_tool.high_contribution_area(point) == [(t, 1, 1 / 81) for t in (0.2, 0.3, 0.5, 0.99)]
    # Uniform 9 x 9: a side-s square holds s^2 / 81 (3: 0.11, 5: 0.31, 7: 0.60, 9: 1).
    sides = [side for _, side, _ in erf_tool.high_contribution_area(np.ones((9, 9)))]
    assert sides == [5, 5, 7, 9]
    # Uniform 8 x 8: the largest centred odd square (7, 49/64 = 0.77) holds less than 99%: the whole map.
    assert erf_tool.high_contribution_area(np.ones((8, 8)))[-1] == (0.99, 8, 1.0)
    assert erf_tool.format_areas([(0.2, 5, 25 / 81)]) == ['t=20% side=5 area_ratio=0.30864']


def test_area_ratios_do_not_decrease_with_the_share():
    rng = np.random.default_rng(1)
    for _ in range(20):
        erf = rng.random((31, 31)) ** rng.uniform(1, 8)
        ratios = [ratio for _, _, ratio in erf_tool.high_contribution_area(erf)]
        assert ratios == sorted(ratios)


@pytest.mark.slow
def test_slak_t_and_pelk_t_maps_side_by_side(tmp_path, capsys):
    images = write_images(tmp_path / 'images', 2)
    out = tmp_path / 'out'
    results = erf_tool.main([
        str(REPO / 'configs/slak/slak-tiny_in1k.py'), '--images', images, '--num-images', '2', '--size', '64',
        '--out-dir', str(out), '--compare', str(REPO / 'configs/pelk/pelk-tiny_in1k.py'),
        '--labels', 'SLaK-T', 'PeLK-T'])
    printed = capsys.readouterr().out
    for label in ('SLaK-T', 'PeLK-T'):
        erf, areas = results[label]
        saved = np.load(out / label / 'erf.npy')
        raw = np.load(out / label / 'erf_raw.npy')
        assert saved.shape == raw.shape == (64, 64)
        assert np.isfinite(saved).all() and np.isfinite(raw).all()
        assert saved.min() >= 0 and saved.max() == 1 and np.array_equal(saved, erf)
        np.testing.assert_allclose(saved, np.log10(raw + 1) / np.log10(raw + 1).max())
        ratios = [ratio for _, _, ratio in areas]
        assert ratios == sorted(ratios)
        for line in erf_tool.format_areas(areas):
            assert f'[{label}] {line}' in printed
        with Image.open(out / label / 'erf.png') as png:
            single_size = png.size
            assert 200 <= png.size[0] <= 1000 and 200 <= png.size[1] <= 1000
    with Image.open(out / 'erf_compare.png') as png:  # two maps side by side, the table below them
        assert png.size[0] > single_size[0] and png.size[1] > single_size[1]


def test_checkpoint_is_loaded(tmp_path):
    """A checkpoint's weights, not the config's initialisation, give the map."""
    config = tiny_slak_config(tmp_path / 'tiny.py')
    cfg, model = erf_tool.build_model(config)
    checkpoint = tmp_path / 'tiny.pth'
    torch.save({'state_dict': model.state_dict()}, checkpoint)
    images = write_images(tmp_path / 'images', 2)
    results = erf_tool.main([config, str(checkpoint), '--images', images, '--num-images', '2', '--size', '64',
                             '--out-dir', str(tmp_path / 'out')])
    inputs = erf_tool.normalised_inputs(
        [erf_tool.read_image(path, 64) for path in erf_tool.find_images(images)], *erf_tool.input_normalisation(cfg))
    raw, _, _ = erf_tool.mean_contribution(model.requires_grad_(False), inputs, 2)
    np.testing.assert_allclose(np.load(tmp_path / 'out' / 'erf_raw.npy'), raw, rtol=1e-6)
    assert np.array_equal(results['tiny'][0], np.load(tmp_path / 'out' / 'erf.npy'))


@pytest.mark.parametrize('case, message', [
    ('missing', '--images directory {tmp}/missing does not exist'),
    ('empty', '--images directory {tmp}/empty holds no image files'),
    ('too_few', '--images directory {tmp}/images holds 2 images, fewer than --num-images 3'),
    ('checkpoint', 'checkpoint {tmp}/missing.pth does not exist'),
    ('size', '--size must be at least 32'),
    ('config', 'config file {tmp}/missing.py does not exist'),
])
def test_user_errors_are_one_line_with_exit_status_2(tmp_path, capsys, case, message):
    config = tiny_slak_config(tmp_path / 'tiny.py')
    (tmp_path / 'empty').mkdir()
    images = write_images(tmp_path / 'images', 2)
    argv = {
        'missing': [config, '--images', str(tmp_path / 'missing')],
        'empty': [config, '--images', str(tmp_path / 'empty')],
        'too_few': [config, '--images', images, '--num-images', '3'],
        'checkpoint': [config, str(tmp_path / 'missing.pth'), '--images', images, '--num-images', '2'],
        'size': [config, '--images', images, '--size', '16'],
        'config': [str(tmp_path / 'missing.py'), '--images', images, '--num-images', '2'],
    }[case]
    with pytest.raises(SystemExit) as exit_info:
        erf_tool.main(argv + ['--out-dir', str(tmp_path / 'out')])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count('\n') == 1 and err.startswith('visualize_erf.py: error: ')
    assert message.format(tmp=tmp_path) in err


def test_a_size_that_is_not_an_integer_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        erf_tool.main(['cfg.py', '--images', str(tmp_path), '--size', 'big', '--out-dir', str(tmp_path)])
    assert exit_info.value.code == 2 and "argument --size: invalid int value: 'big'" in capsys.readouterr().err


@pytest.mark.parametrize('content', [b'not a checkpoint', 'wrong model'])
def test_an_unreadable_or_mismatched_checkpoint_is_one_error_line(tmp_path, capsys, content):
    config = tiny_slak_config(tmp_path / 'tiny.py')
    checkpoint = tmp_path / 'bad.pth'
    if content == 'wrong model':
        torch.save({'state_dict': {'stem.weight': torch.zeros(1)}}, checkpoint)
    else:
        checkpoint.write_bytes(content)
    images = write_images(tmp_path / 'images', 1)
    with pytest.raises(SystemExit) as exit_info:
        erf_tool.main([config, str(checkpoint), '--images', images, '--num-images', '1', '--size', '32',
                       '--out-dir', str(tmp_path / 'out')])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count('\n') == 1
    assert f'cannot load checkpoint {checkpoint} into the model of {config}: ' in err


def test_inputs_are_normalised_like_the_training_data(tmp_path):
    """mmseg/mmdet's bgr_to_rgb, mmpretrain's top-level to_rgb, BGR without a flag, ImageNet RGB without any."""
    from mmengine.config import Config
    configs = {
        'seg': Config(dict(model=dict(data_preprocessor=dict(mean=[1, 2, 3], std=[2, 2, 2], bgr_to_rgb=True)))),
        'cls': Config(dict(model=dict(), data_preprocessor=dict(mean=[1, 2, 3], std=[2, 2, 2], to_rgb=True))),
        'bgr': Config(dict(model=dict(data_preprocessor=dict(mean=[1, 2, 3], std=[2, 2, 2])))),
        'none': Config(dict(model=dict())),
    }
    pixel = np.array([[[10, 20, 30]]], dtype=np.uint8)  # one RGB pixel
    expected = {'seg': [4.5, 9, 13.5], 'cls': [4.5, 9, 13.5], 'bgr': [14.5, 9, 3.5],
                'none': [(10 - 123.675) / 58.395, (20 - 116.28) / 57.12, (30 - 103.53) / 57.375]}
    for name, cfg in configs.items():
        tensor, = erf_tool.normalised_inputs([pixel], *erf_tool.input_normalisation(cfg))
        np.testing.assert_allclose(tensor.flatten().numpy(), expected[name], rtol=1e-6, err_msg=name)

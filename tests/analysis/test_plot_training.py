"""tools/analysis/plot_training.py on scalars.json files written in MMEngine's format."""
import json

import pytest
from analysis_tools import load_tool
from PIL import Image

plot_tool = load_tool('plot_training')


def write_scalars(work_dir, timestamp, records):
    vis_data = work_dir / timestamp / 'vis_data'
    vis_data.mkdir(parents=True)
    (vis_data / 'scalars.json').write_text(''.join(json.dumps(record) + '\n' for record in records))


def train_record(step, loss, epoch=None):
    record = dict(base_lr=1e-3, lr=1e-3, data_time=0.01, loss=loss, time=0.2, iter=step, memory=0, step=step)
    if epoch is not None:
        record['epoch'] = epoch
    return record


@pytest.fixture
def runs(tmp_path):
    """An iteration-based run resumed once (two timestamps, step 100 logged twice) and an epoch-based run."""
    seg = tmp_path / 'seg'
    write_scalars(seg, '20260101_000000', [train_record(50, 2.0), train_record(100, 1.5)])
    write_scalars(seg, '20260101_010000', [train_record(100, 1.4), train_record(150, 1.0),
                                           dict(aAcc=80.0, mIoU=25.0, mAcc=30.0, data_time=0.1, time=0.3, step=150)])
    det = tmp_path / 'det'
    write_scalars(det, '20260102_000000', [train_record(10, 3.0, epoch=1), train_record(20, 2.5, epoch=2),
                                           {'pascal_voc/mAP': 0.1, 'pascal_voc/AP50': 0.1, 'step': 1},
                                           {'pascal_voc/mAP': 0.3, 'pascal_voc/AP50': 0.3, 'step': 2}])
    return seg, det


def test_runs_are_merged_over_resumes_and_overlaid(tmp_path, runs, capsys):
    seg, det = runs
    out = tmp_path / 'curves.png'
    plotted = plot_tool.main([str(seg), str(det), '--keys', 'loss', 'mIoU', 'pascal_voc/mAP', '--out', str(out)])
    # The resumed run's value of step 100 replaces the first run's.
    assert plotted['loss'] == {'seg': ((50, 100, 150), (2.0, 1.4, 1.0)), 'det': ((10, 20), (3.0, 2.5))}
    assert plotted['mIoU'] == {'seg': ((150, ), (25.0, ))}
    assert plotted['pascal_voc/mAP'] == {'det': ((1, 2), (0.1, 0.3))}
    assert plot_tool.curve(plot_tool.read_run(str(det)), 'pascal_voc/mAP')[2] == 'epoch'
    assert plot_tool.curve(plot_tool.read_run(str(seg)), 'mIoU')[2] == 'iteration'
    with Image.open(out) as png:
        assert png.size[0] >= 3 * 300 and png.size[1] >= 250
    assert 'curves.png: loss, mIoU, pascal_voc/mAP of 2 run(s)' in capsys.readouterr().out


def test_a_scalars_file_can_be_given_directly(tmp_path, runs):
    seg, _ = runs
    plotted = plot_tool.main([str(seg / '20260101_000000' / 'vis_data' / 'scalars.json'), '--labels', 'first',
                              '--out', str(tmp_path / 'loss.png')])
    assert plotted['loss'] == {'first': ((50, 100), (2.0, 1.5))}


@pytest.mark.parametrize('case, message', [
    ('missing', 'work dir {tmp}/missing does not exist'),
    ('not_a_work_dir', '{tmp} holds no <timestamp>/vis_data/scalars.json'),
    ('key', 'no run logged "mAP"; logged keys: aAcc, base_lr, data_time, iter, loss, lr, mAcc, mIoU, memory, time'),
    ('labels', '--labels needs one name per work dir (1), got 2'),
    ('extension', '--out {tmp}/curves.txt: the extension must be one of'),
])
def test_user_errors_are_one_line_with_exit_status_2(tmp_path, runs, capsys, case, message):
    seg, _ = runs
    argv = {
        'missing': [str(tmp_path / 'missing')],
        'not_a_work_dir': [str(tmp_path)],
        'key': [str(seg), '--keys', 'mAP'],
        'labels': [str(seg), '--labels', 'a', 'b'],
        'extension': [str(seg), '--out', str(tmp_path / 'curves.txt')],
    }[case]
    if '--out' not in argv:
        argv += ['--out', str(tmp_path / 'curves.png')]
    with pytest.raises(SystemExit) as exit_info:
        plot_tool.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count('\n') == 1 and err.startswith('plot_training.py: error: ')
    assert message.format(tmp=tmp_path) in err

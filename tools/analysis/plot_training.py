"""Training curves of one or more runs from MMEngine's ``scalars.json``, overlaid.

Usage:
    python tools/analysis/plot_training.py WORK_DIR [WORK_DIR ...] --keys loss mIoU --out FILE.png
        [--labels NAME ...]

A WORK_DIR is a ``tools/train.py`` work dir: every ``WORK_DIR/<timestamp>/vis_data/scalars.json`` in it is
read in timestamp order, so a resumed run continues its first part (a step logged twice keeps the later
value). A timestamp directory or a ``scalars.json`` file can be given instead.

MMEngine writes one JSON object per line: training logs (they carry ``lr``) at ``step`` = the iteration,
validation metrics at ``step`` = the iteration for iteration-based loops (mmseg) or the epoch for
epoch-based ones (mmdet, mmpretrain; their training logs carry ``epoch``). Each key gets one panel, x being
the iteration for training keys and the step of the validation logs for metrics; a key found in no run is
an error that lists the keys there are.
"""
import argparse
import glob
import json
import os.path as osp

from matplotlib.figure import Figure

from mmslak.utils.cli import UserError, one_line_user_errors


def scalar_files(path):
    """The ``scalars.json`` files of a work dir, a timestamp dir or the file itself, oldest first."""
    if osp.isfile(path):
        return [path]
    if not osp.isdir(path):
        raise UserError(f'work dir {path} does not exist')
    files = [osp.join(path, 'vis_data', 'scalars.json')]
    if not osp.isfile(files[0]):
        files = sorted(glob.glob(osp.join(path, '*', 'vis_data', 'scalars.json')))
    if not files:
        raise UserError(f'{path} holds no <timestamp>/vis_data/scalars.json (is it a tools/train.py work dir?)')
    return files


def read_run(path):
    """Training and validation records of a run: ``(train, val, epoch_based)``, each list sorted by step."""
    records = {}
    for file in scalar_files(path):
        with open(file) as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    raise UserError(f'{file}, line {number}: not a JSON object') from None
                if 'step' not in record:
                    raise UserError(f'{file}, line {number}: no "step" (not an MMEngine scalars.json)')
                records[('train' if 'lr' in record else 'val', record['step'])] = record
    train = [records[key] for key in sorted(key for key in records if key[0] == 'train')]
    val = [records[key] for key in sorted(key for key in records if key[0] == 'val')]
    return train, val, any('epoch' in record for record in train)


def curve(run, key):
    """``(steps, values, x label)`` of ``key`` in ``run``, or None when the run never logged it."""
    train, val, epoch_based = run
    for records, unit in ((train, 'iteration'), (val, 'epoch' if epoch_based else 'iteration')):
        points = [(record['step'], record[key]) for record in records if isinstance(record.get(key), (int, float))]
        if points:
            steps, values = zip(*points)
            return steps, values, unit
    return None


def plot(runs, labels, keys, out):
    """One panel per key with every run that logged it; returns ``{key: {label: (steps, values)}}``."""
    figure = Figure(figsize=(5 * len(keys), 3.6))
    plotted = {}
    for index, key in enumerate(keys):
        axes = figure.add_subplot(1, len(keys), index + 1)
        units = set()
        plotted[key] = {}
        for run, label in zip(runs, labels):
            points = curve(run, key)
            if points is None:
                continue
            steps, values, unit = points
            units.add(unit)
            plotted[key][label] = (steps, values)
            axes.plot(steps, values, marker='o' if len(steps) < 20 else None, markersize=3, label=label)
        axes.set_title(key)
        axes.set_xlabel(' / '.join(sorted(units)))
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8)
    figure.savefig(out, dpi=100, bbox_inches='tight')
    return plotted


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Training curves from MMEngine scalars.json, runs overlaid.')
    parser.add_argument('work_dirs', nargs='+', metavar='WORK_DIR', help='work dirs (or scalars.json files)')
    parser.add_argument('--keys', nargs='+', default=['loss'], help='logged keys to plot (default: loss)')
    parser.add_argument('--out', required=True, help='output image (.png, .jpg, .pdf, .svg)')
    parser.add_argument('--labels', nargs='+', help='legend names of the runs (default: work dir names)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    with one_line_user_errors(osp.basename(__file__)):
        labels = args.labels or [osp.basename(osp.normpath(path)) for path in args.work_dirs]
        if len(labels) != len(args.work_dirs):
            raise UserError(f'--labels needs one name per work dir ({len(args.work_dirs)}), got {len(labels)}')
        runs = [read_run(path) for path in args.work_dirs]
        for key in args.keys:
            if all(curve(run, key) is None for run in runs):
                available = sorted({name for train, val, _ in runs for record in train + val for name in record
                                    if isinstance(record[name], (int, float)) and name != 'step'})
                raise UserError(f'no run logged "{key}"; logged keys: {", ".join(available)}')
        out_dir = osp.dirname(osp.abspath(args.out))
        if not osp.isdir(out_dir):
            raise UserError(f'--out directory {out_dir} does not exist')
        formats = Figure().canvas.get_supported_filetypes()
        if osp.splitext(args.out)[1].lstrip('.').lower() not in formats:
            raise UserError(f'--out {args.out}: the extension must be one of {", ".join(sorted(formats))}')
        plotted = plot(runs, labels, args.keys, args.out)
    print(f'{args.out}: {", ".join(args.keys)} of {len(runs)} run(s)')
    return plotted


if __name__ == '__main__':
    main()

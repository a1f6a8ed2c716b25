"""Missing or broken data is one line naming what to fix: paths, annotation files, images, class counts."""
import json

import pytest
from mmengine.config import Config
from tool_runs import ROOT, run
from tool_runs import TINY_CLASSIFIER as CONFIG
from tool_runs import write_image_folder

import mmslak  # noqa: F401
from mmslak.utils.cli import UserError
from mmslak.utils.data_check import (TEST_LOADERS, TRAIN_LOADERS, check_class_counts, check_data_paths,
                                     describe_data_error)

TOY_ADE = ROOT / 'configs/toy/upernet_slak-toy_1xb8-1000iter_toy-ade-128x128.py'
README_HINT = 'see README.md, section "The real datasets"'


def one_error_line(result):
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


# ---------------------------------------------------------------- missing paths, before the Runner is built


def test_missing_data_root_is_one_line_naming_key_and_readme(tmp_path):
    line = one_error_line(run('tools/train.py', CONFIG, '--work-dir', tmp_path, '--cfg-options',
                              'train_dataloader.dataset.data_root=/no/such/images'))
    assert line == ('train.py: error: data root /no/such/images does not exist (set by '
                    f'train_dataloader.dataset.data_root); {README_HINT}')
    assert not any(tmp_path.iterdir())  # refused before the Runner wrote anything


def test_test_tool_checks_the_test_dataloader(tmp_path):
    line = one_error_line(run('tools/test.py', CONFIG, tmp_path / 'none.pth', '--work-dir', tmp_path,
                              '--cfg-options', 'test_dataloader.dataset.data_root=/no/such/test'))
    assert line == ('test.py: error: data root /no/such/test does not exist (set by '
                    f'test_dataloader.dataset.data_root); {README_HINT}')


def test_missing_toy_data_says_how_to_generate_it(tmp_path):
    # run from an empty directory: the toy config's relative data/toy/ade is not there
    line = one_error_line(run(ROOT / 'tools/train.py', TOY_ADE, '--work-dir', tmp_path, cwd=tmp_path))
    assert line == ('train.py: error: data root data/toy/ade does not exist (set by '
                    'train_dataloader.dataset.data_root); generate it with: '
                    'python tools/dataset_converters/make_toy_data.py')


def voc0712_config(data_root):
    """MMDetection's VOC0712 layout: a RepeatDataset of a ConcatDataset of VOC2007 and VOC2012."""
    def voc(year):
        return dict(type='VOCDataset', data_root=data_root, ann_file=f'VOC{year}/ImageSets/Main/trainval.txt',
                    data_prefix=dict(sub_data_root=f'VOC{year}/'))
    return Config(dict(
        default_scope='mmdet',
        train_dataloader=dict(dataset=dict(type='RepeatDataset', times=3, dataset=dict(
            type='ConcatDataset', datasets=[voc(2007), voc(2012)]))),
        val_dataloader=dict(dataset=dict(voc(2007), ann_file='VOC2007/ImageSets/Main/test.txt')),
        val_cfg=dict(type='ValLoop'), val_evaluator=dict(type='VOCMetric')))


def test_paths_inside_dataset_wrappers_are_checked_in_order(tmp_path):
    root = f'{tmp_path}/VOCdevkit/'
    cfg = voc0712_config(root)
    with pytest.raises(UserError) as error:
        check_data_paths(cfg, TRAIN_LOADERS)
    assert str(error.value) == (f'data root {root} does not exist (set by '
                                f'train_dataloader.dataset.dataset.datasets.0.data_root); {README_HINT}')

    (tmp_path / 'VOCdevkit/VOC2007/ImageSets/Main').mkdir(parents=True)
    (tmp_path / 'VOCdevkit/VOC2007/ImageSets/Main/trainval.txt').write_text('000001\n')
    with pytest.raises(UserError) as error:
        check_data_paths(cfg, TRAIN_LOADERS)
    assert str(error.value) == (
        f'annotation file {root}VOC2012/ImageSets/Main/trainval.txt does not exist (set by '
        'train_dataloader.dataset.dataset.datasets.1.ann_file under train_dataloader.dataset.dataset.datasets.1'
        f'.data_root); {README_HINT}')

    cfg.train_dataloader.dataset.dataset.datasets.pop()
    with pytest.raises(UserError, match='VOC2007/ImageSets/Main/test.txt does not exist .set by val_dataloader'):
        check_data_paths(cfg, TRAIN_LOADERS)
    check_data_paths(cfg, TEST_LOADERS)  # no test_dataloader: nothing to check
    cfg.val_cfg = None  # without a val loop the Runner builds no val dataset
    check_data_paths(cfg, TRAIN_LOADERS)


def test_data_folders_and_evaluator_annotations_are_checked(tmp_path):
    (tmp_path / 'annotations').mkdir()
    (tmp_path / 'annotations/val.json').write_text('{}')
    dataset = dict(type='CocoDataset', data_root=str(tmp_path), ann_file='annotations/val.json',
                   data_prefix=dict(img='val2017/'))
    cfg = Config(dict(test_dataloader=dict(dataset=dataset),
                      test_evaluator=dict(type='CocoMetric', ann_file=f'{tmp_path}/annotations/missing.json')))
    with pytest.raises(UserError) as error:
        check_data_paths(cfg, TEST_LOADERS)
    assert str(error.value) == (f'data folder {tmp_path}/val2017/ does not exist (set by '
                                'test_dataloader.dataset.data_prefix.img under test_dataloader.dataset.data_root); '
                                f'{README_HINT}')
    (tmp_path / 'val2017').mkdir()
    with pytest.raises(UserError) as error:
        check_data_paths(cfg, TEST_LOADERS)
    assert str(error.value) == (f'annotation file {tmp_path}/annotations/missing.json does not exist (set by '
                                f'test_evaluator.ann_file); {README_HINT}')


# ---------------------------------------------------------------- malformed annotation files


def test_malformed_coco_json_names_the_file(tmp_path):
    from mmdet.datasets import CocoDataset
    text = json.dumps({'images': [{'id': 1, 'file_name': 'a.png'}], 'annotations': []})[:30]  # cut short
    ann_file = tmp_path / 'instances.json'
    ann_file.write_text(text)
    with pytest.raises(json.JSONDecodeError) as reference:
        json.loads(text)
    with pytest.raises(json.JSONDecodeError) as error:
        CocoDataset(data_root=str(tmp_path), ann_file='instances.json', data_prefix=dict(img=''), pipeline=[])
    where = reference.value
    assert describe_data_error(error.value) == (
        f'annotation file {ann_file} is not valid JSON ({where.msg}: line {where.lineno} column {where.colno}); '
        'repair or re-create it')


def test_malformed_voc_xml_names_the_file(tmp_path):
    from mmdet.datasets import VOCDataset
    (tmp_path / 'VOC2007/ImageSets/Main').mkdir(parents=True)
    (tmp_path / 'VOC2007/Annotations').mkdir()
    (tmp_path / 'VOC2007/ImageSets/Main/train.txt').write_text('000001\n000002\n')
    good = '<annotation><size><width>8</width><height>8</height></size></annotation>'
    (tmp_path / 'VOC2007/Annotations/000001.xml').write_text(good)
    (tmp_path / 'VOC2007/Annotations/000002.xml').write_text(good[:40])
    with pytest.raises(Exception) as error:
        VOCDataset(data_root=str(tmp_path), ann_file='VOC2007/ImageSets/Main/train.txt',
                   data_prefix=dict(sub_data_root='VOC2007/'), pipeline=[])
    message = describe_data_error(error.value)
    assert message.startswith(f'annotation file {tmp_path}/VOC2007/Annotations/000002.xml is not valid XML (')


def test_other_errors_are_left_alone():
    assert describe_data_error(ValueError('something else')) is None


# ---------------------------------------------------------------- undecodable images, during the run


def train(work_dir, images, max_iters, *extra, options=()):
    return run('tools/train.py', CONFIG, '--work-dir', work_dir, *extra, '--cfg-options',
               f'train_dataloader.dataset.data_root={images}', f'train_cfg.max_iters={max_iters}',
               'default_hooks.checkpoint.interval=2', *options)


@pytest.mark.slow
def test_undecodable_image_is_named_and_checkpoints_stay(tmp_path):
    images = write_image_folder(tmp_path / 'images')
    assert train(tmp_path / 'run', images, 2).returncode == 0
    saved = (tmp_path / 'run/iter_2.pth').read_bytes()
    (images / 'dark' / 'broken.png').write_bytes(b'')  # a file that was never written
    # 17 images in batches of 4: the resumed run meets the empty file within its first epoch
    line = one_error_line(train(tmp_path / 'run', images, 8, '--resume'))
    assert line == (f'train.py: error: image {images}/dark/broken.png cannot be decoded (not an image, empty or '
                    'corrupt); replace it or remove it from the dataset')
    assert (tmp_path / 'run/iter_2.pth').read_bytes() == saved


def test_undecodable_image_in_a_dataloader_worker_is_named(tmp_path):
    images = write_image_folder(tmp_path / 'images', broken=b'\x89PNG but then nothing an image decoder accepts')
    line = one_error_line(train(tmp_path / 'run', images, 8, options=['train_dataloader.num_workers=1']))
    assert line == (f'train.py: error: image {images}/dark/broken.png cannot be decoded (not an image, empty or '
                    'corrupt); replace it or remove it from the dataset')


# ---------------------------------------------------------------- classes


def test_num_classes_must_match_the_dataset_classes():
    cfg = Config.fromfile(str(TOY_ADE))
    check_class_counts(cfg, TRAIN_LOADERS)  # the toy config is consistent
    cfg.model.decode_head.num_classes = 3
    with pytest.raises(UserError) as error:
        check_class_counts(cfg, TRAIN_LOADERS)
    assert str(error.value) == ('model.decode_head.num_classes=3 but train_dataloader.dataset has 4 classes '
                                '(metainfo.classes: wall, ball, box, tent); make them agree')


def test_palette_shorter_than_the_classes_is_refused_before_mmseg_fails():
    """mmseg indexes a subset's palette by ADE20K class ids: 4 colours for 3 classes is an IndexError there."""
    cfg = Config.fromfile(str(TOY_ADE))
    for loader in ('train_dataloader', 'val_dataloader'):
        cfg[loader].dataset.metainfo['classes'] = ('wall', 'ball', 'box')
    cfg.model.decode_head.num_classes = cfg.model.auxiliary_head.num_classes = 3
    with pytest.raises(UserError) as error:
        check_class_counts(cfg, TRAIN_LOADERS)
    assert str(error.value) == ('train_dataloader.dataset.metainfo.palette has 4 colours for 3 classes; give one '
                                'colour per class (or no palette)')
    from mmseg.datasets import ADE20KDataset
    with pytest.raises(IndexError):  # what the check saves users from
        ADE20KDataset(data_root='.', data_prefix=dict(img_path='.', seg_map_path='.'), pipeline=[],
                      metainfo=cfg.train_dataloader.dataset.metainfo, lazy_init=True)


def test_dataset_class_defaults_count_when_metainfo_names_no_classes():
    cfg = Config(dict(default_scope='mmdet', model=dict(roi_head=dict(bbox_head=[dict(num_classes=20),
                                                                                   dict(num_classes=80)])),
                      test_dataloader=dict(dataset=dict(type='VOCDataset'))))
    with pytest.raises(UserError) as error:
        check_class_counts(cfg, TEST_LOADERS)
    assert str(error.value) == ('model.roi_head.bbox_head.1.num_classes=80 but test_dataloader.dataset has 20 '
                                'classes (the classes of VOCDataset: aeroplane, bicycle, bird, boat, bottle, ...); '
                                'make them agree')

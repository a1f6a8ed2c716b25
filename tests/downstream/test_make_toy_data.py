"""The toy data generator: deterministic, and the three formats describe the same scenes."""
import json
import os
import os.path as osp
import subprocess
import sys
from xml.etree import ElementTree

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCRIPT = osp.join(ROOT, 'tools', 'dataset_converters', 'make_toy_data.py')
# ADE20K label ids of the toy classes: 'wall' is ADE class 0, 'box' 41, 'tent' 114, 'ball' 119.
ADE_ID = {'circle': 120, 'square': 42, 'triangle': 115}
ADE_BACKGROUND, ADE_IGNORE = 1, 0


def make_toy_data(out, *args):
    return subprocess.run([sys.executable, SCRIPT, '--out', str(out), '--num-train', '6', '--num-val', '3',
                           '--size', '64', *args], check=True, capture_output=True, text=True).stdout


def tree_bytes(root):
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            with open(osp.join(folder, name), 'rb') as f:
                files[osp.relpath(osp.join(folder, name), root)] = f.read()
    return files


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    out = tmp_path_factory.mktemp('toy')
    make_toy_data(out)
    return out


def test_layouts(toy):
    for split in ('training', 'validation'):
        assert len(os.listdir(toy / 'ade' / 'images' / split)) == (6 if split == 'training' else 3)
        assert len(os.listdir(toy / 'ade' / 'annotations' / split)) == (6 if split == 'training' else 3)
    voc = toy / 'voc' / 'VOC2007'
    trainval = (voc / 'ImageSets' / 'Main' / 'trainval.txt').read_text().split()
    test = (voc / 'ImageSets' / 'Main' / 'test.txt').read_text().split()
    assert len(trainval) == 6 and len(test) == 3 and not set(trainval) & set(test)
    for name in trainval + test:
        assert (voc / 'JPEGImages' / f'{name}.jpg').is_file()
        assert (voc / 'Annotations' / f'{name}.xml').is_file()
    for split, count in (('train', 6), ('val', 3)):
        assert len(os.listdir(toy / 'coco' / f'{split}2017')) == count
        assert (toy / 'coco' / 'annotations' / f'instances_{split}2017.json').is_file()


def test_same_seed_same_bytes_other_seed_other_images(toy, tmp_path):
    make_toy_data(tmp_path / 'again')
    assert tree_bytes(tmp_path / 'again') == tree_bytes(toy)
    make_toy_data(tmp_path / 'other', '--seed', '1', '--tasks', 'ade')
    image = 'images/training/training_00000.jpg'
    assert tree_bytes(tmp_path / 'other' / 'ade')[image] != tree_bytes(toy / 'ade')[image]


def test_up_to_date_data_is_kept_and_changed_settings_regenerate(tmp_path):
    make_toy_data(tmp_path, '--tasks', 'voc')
    xml = tmp_path / 'voc' / 'VOC2007' / 'Annotations' / 'trainval_00000.xml'
    os.utime(xml, (0, 0))
    assert 'up to date' in make_toy_data(tmp_path, '--tasks', 'voc')
    assert xml.stat().st_mtime == 0
    make_toy_data(tmp_path, '--tasks', 'voc', '--seed', '3')
    assert xml.stat().st_mtime != 0


@pytest.mark.parametrize('coco_split, ade_split, voc_prefix', [('train', 'training', 'trainval'),
                                                               ('val', 'validation', 'test')])
def test_formats_describe_the_same_objects(toy, coco_split, ade_split, voc_prefix):
    coco = COCO(str(toy / 'coco' / 'annotations' / f'instances_{coco_split}2017.json'))
    shape_of = {cat['id']: cat['name'] for cat in coco.loadCats(coco.getCatIds())}
    assert sorted(shape_of.values()) == ['circle', 'square', 'triangle']
    for image_info in coco.loadImgs(coco.getImgIds()):
        name = osp.splitext(image_info['file_name'])[0].replace(coco_split, ade_split, 1)
        coco_image = cv2.imread(str(toy / 'coco' / f'{coco_split}2017' / image_info['file_name']))
        ade_image = cv2.imread(str(toy / 'ade' / 'images' / ade_split / f'{name}.jpg'))
        np.testing.assert_array_equal(coco_image, ade_image)
        label = cv2.imread(str(toy / 'ade' / 'annotations' / ade_split / f'{name}.png'),
                           cv2.IMREAD_UNCHANGED)
        assert set(np.unique(label)) <= {ADE_IGNORE, ADE_BACKGROUND, *ADE_ID.values()}
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_info['id']))
        assert anns, 'every scene has at least one object'
        voc_name = name.replace(ade_split, voc_prefix, 1)
        xml = ElementTree.parse(toy / 'voc' / 'VOC2007' / 'Annotations' / f'{voc_name}.xml')
        voc_objects = [(obj.find('name').text, [int(obj.find('bndbox').find(tag).text)
                                                for tag in ('xmin', 'ymin', 'xmax', 'ymax')])
                       for obj in xml.findall('object')]
        assert len(voc_objects) == len(anns)
        union = {shape: np.zeros(label.shape, bool) for shape in ADE_ID}
        for ann, (voc_shape, (xmin, ymin, xmax, ymax)) in zip(anns, voc_objects):
            shape = shape_of[ann['category_id']]
            assert voc_shape == shape
            mask = coco.annToMask(ann).astype(bool)
            x, y, w, h = ann['bbox']
            # VOC boxes are 1-based inclusive, COCO boxes 0-based [x, y, w, h]; both are tight.
            assert (xmin, ymin, xmax, ymax) == (x + 1, y + 1, x + w, y + h)
            ys, xs = np.nonzero(mask)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)
            assert ann['area'] == mask.sum()
            union[shape] |= mask
        objects = np.zeros(label.shape, bool)
        for shape, mask in union.items():
            np.testing.assert_array_equal(label == ADE_ID[shape], mask)
            objects |= mask
        # Background pixels touching an object are ignored, the rest are background.
        ring = cv2.dilate(objects.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~objects
        np.testing.assert_array_equal(label == ADE_IGNORE, ring)
        np.testing.assert_array_equal(label == ADE_BACKGROUND, ~objects & ~ring)

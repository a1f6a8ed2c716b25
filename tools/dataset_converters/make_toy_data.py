"""Generate the toy datasets: small scenes of textured shapes in the real ADE20K, VOC2007 and COCO layouts.

Every scene is a textured background with a few clutter blobs (background too) and one to four
non-overlapping objects: circles, squares and triangles, each filled with a random texture, so a model has
to learn shapes rather than colours. The same scenes (a function of the seed, the split and the image
index) are written in three on-disk formats, read by the stock ``ADE20KDataset``, ``VOCDataset`` and
``CocoDataset``:

* ``ade/``: ``images/{training,validation}/*.jpg``, ``annotations/{training,validation}/*.png`` with
  ADE20K label ids (0 = ignore, on a ring around each object like ADE's unlabelled pixels; the background is
  ADE's ``wall``, the shapes ADE's ``ball``, ``box`` and ``tent`` classes: see ``ADE_CLASS_IDS``).
* ``voc/VOC2007/``: ``JPEGImages/*.jpg``, ``Annotations/*.xml`` (1-based inclusive boxes),
  ``ImageSets/Main/{trainval,test}.txt``.
* ``coco/``: ``annotations/instances_{train,val}2017.json`` (polygon masks), ``{train,val}2017/*.jpg``.

The output depends only on the arguments: a dataset whose stamp file records the same arguments is
kept, so calling this before every toy run costs nothing after the first time.

Example:
    python tools/dataset_converters/make_toy_data.py              # writes data/toy/{ade,voc,coco}
    python tools/dataset_converters/make_toy_data.py --tasks ade --num-train 400 --force
"""
import argparse
import json
import os
import os.path as osp
import shutil
from xml.etree import ElementTree

import cv2
import numpy as np
from pycocotools import mask as mask_utils

SHAPES = ('circle', 'square', 'triangle')
# ADE20K label ids (1-based: the PNG value of class index i is i + 1) standing in for the toy classes,
# chosen among ADE's 150 classes so that the stock ADE20KDataset reads the toy data with a class subset.
ADE_CLASS_IDS = {'background': ('wall', 1), 'circle': ('ball', 120), 'square': ('box', 42),
                 'triangle': ('tent', 115)}
ADE_IGNORE = 0
SPLITS = {'ade': ('training', 'validation'), 'voc': ('trainval', 'test'), 'coco': ('train', 'val')}
STAMP = '.toy_data.json'


def random_colour(rng):
    return rng.uniform(0, 255, size=3)


def texture(rng, height, width):
    """A random float32 HxWx3 texture: stripes, checkerboard, dots, smooth noise or a gradient."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    colour_a, colour_b = random_colour(rng), random_colour(rng)
    kind = rng.integers(5)
    if kind == 0:  # stripes at a random angle and period
        angle, period = rng.uniform(0, np.pi), rng.uniform(4, 16)
        blend = np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period) > 0
    elif kind == 1:  # checkerboard
        cell = rng.integers(3, 12)
        blend = ((x // cell + y // cell) % 2) == 0
    elif kind == 2:  # dots on a grid
        spacing = rng.uniform(5, 14)
        radius = spacing * rng.uniform(0.2, 0.4)
        blend = ((x % spacing - spacing / 2)**2 + (y % spacing - spacing / 2)**2) < radius**2
    elif kind == 3:  # smooth noise
        cells = rng.integers(3, 9)
        coarse = rng.uniform(0, 1, size=(cells, cells)).astype(np.float32)
        blend = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    else:  # linear gradient
        angle = rng.uniform(0, 2 * np.pi)
        ramp = x * np.cos(angle) + y * np.sin(angle)
        blend = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-6)
    blend = np.asarray(blend, np.float32)[..., None]
    image = blend * colour_a + (1 - blend) * colour_b
    return image + rng.normal(0, rng.uniform(2, 12), size=image.shape)


def shape_polygon(rng, shape, centre, radius):
    """Vertices (N x 2 float array, x then y) of a rotated shape inscribed in a circle of ``radius``."""
    if shape == 'circle':
        angles = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        radii = np.full_like(angles, radius)
    elif shape == 'square':
        angles = np.pi / 4 + np.arange(4) * np.pi / 2
        radii = np.full_like(angles, radius)
    elif shape == 'triangle':
        angles = np.arange(3) * 2 * np.pi / 3 + rng.uniform(-0.15, 0.15, size=3)
        radii = np.full_like(angles, radius)
    else:  # clutter: a wobbly blob, clearly not a circle
        angles = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        wobble = sum(rng.uniform(0.1, 0.2) * np.sin(k * angles + rng.uniform(0, 2 * np.pi))
                     for k in (2, 3, 5))
        radii = radius * (1 + wobble)
    angles = angles + rng.uniform(0, 2 * np.pi)
    # Rounded as written to the COCO json, so that masks decoded from the json are the painted ones.
    return np.round(np.stack([centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles)], 1), 2)


def place(rng, size, placed, min_radius, max_radius):
    """A (centre, radius) inside the image not overlapping ``placed`` circles, or None after 50 tries."""
    for _ in range(50):
        radius = rng.uniform(min_radius, max_radius)
        centre = rng.uniform(radius + 1, size - radius - 1, size=2)
        if all(np.hypot(*(centre - c)) > radius + r + 2 for c, r in placed):
            return centre, radius
    return None


def fill_mask(polygon, size):
    """Rasterise a polygon as COCO tools do, so the COCO masks match the painted pixels exactly."""
    rle = mask_utils.frPyObjects([polygon.reshape(-1).tolist()], size, size)
    return mask_utils.decode(rle)[..., 0].astype(bool)


def contrasting_fill(rng, image, mask, min_difference=40, tries=10):
    """Texture pixels for ``mask`` whose mean colour differs from the covered pixels' in some channel."""
    covered = image[mask].mean(0)
    for _ in range(tries):
        fill = texture(rng, *mask.shape)[mask]
        if np.abs(fill.mean(0) - covered).max() >= min_difference:
            break
    return fill


def make_scene(rng, size):
    """One scene: the image (uint8 HxWx3 BGR) and its objects, a list of (shape, polygon, mask)."""
    image = texture(rng, size, size)
    # Clutter blobs belong to the background; objects may cover them but never each other.
    for _ in range(rng.integers(0, 3)):
        centre, radius = place(rng, size, [], size * 0.08, size * 0.18)
        mask = fill_mask(shape_polygon(rng, 'clutter', centre, radius), size)
        image[mask] = texture(rng, size, size)[mask]
    placed, objects = [], []
    for _ in range(rng.integers(1, 5)):
        spot = place(rng, size, placed, size * 0.1, size * 0.24)
        if spot is None:
            continue
        placed.append(spot)
        shape = SHAPES[rng.integers(len(SHAPES))]
        polygon = shape_polygon(rng, shape, *spot)
        mask = fill_mask(polygon, size)
        image[mask] = contrasting_fill(rng, image, mask)
        objects.append((shape, polygon, mask))
    return np.clip(image, 0, 255).astype(np.uint8), objects


def box_of(mask):
    """Tight pixel box (x0, y0, x1, y1), x1/y1 exclusive, of a boolean mask."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def ade_label(objects, size):
    """ADE20K label ids: background, objects, and ignore on the one-pixel ring around each object."""
    label = np.full((size, size), ADE_CLASS_IDS['background'][1], np.uint8)
    covered = np.zeros((size, size), np.uint8)
    for shape, _, mask in objects:
        label[mask] = ADE_CLASS_IDS[shape][1]
        covered[mask] = 1
    ring = cv2.dilate(covered, np.ones((3, 3), np.uint8)).astype(bool) & ~covered.astype(bool)
    label[ring] = ADE_IGNORE
    return label


def write_ade(root, split, name, image, objects):
    cv2.imwrite(osp.join(root, 'images', split, f'{name}.jpg'), image)
    cv2.imwrite(osp.join(root, 'annotations', split, f'{name}.png'), ade_label(objects, image.shape[0]))


def voc_xml(name, image, objects):
    annotation = ElementTree.Element('annotation')
    ElementTree.SubElement(annotation, 'folder').text = 'VOC2007'
    ElementTree.SubElement(annotation, 'filename').text = f'{name}.jpg'
    size = ElementTree.SubElement(annotation, 'size')
    for tag, value in zip(('width', 'height', 'depth'), (image.shape[1], image.shape[0], 3)):
        ElementTree.SubElement(size, tag).text = str(value)
    ElementTree.SubElement(annotation, 'segmented').text = '0'
    for shape, _, mask in objects:
        obj = ElementTree.SubElement(annotation, 'object')
        for tag, value in (('name', shape), ('pose', 'Unspecified'), ('truncated', '0'),
                           ('difficult', '0')):
            ElementTree.SubElement(obj, tag).text = value
        x0, y0, x1, y1 = box_of(mask)
        bndbox = ElementTree.SubElement(obj, 'bndbox')
        # VOC boxes are 1-based and inclusive.
        for tag, value in zip(('xmin', 'ymin', 'xmax', 'ymax'), (x0 + 1, y0 + 1, x1, y1)):
            ElementTree.SubElement(bndbox, tag).text = str(value)
    ElementTree.indent(annotation)
    return ElementTree.tostring(annotation, encoding='unicode')


def write_voc(root, name, image, objects):
    cv2.imwrite(osp.join(root, 'VOC2007', 'JPEGImages', f'{name}.jpg'), image)
    with open(osp.join(root, 'VOC2007', 'Annotations', f'{name}.xml'), 'w') as f:
        f.write(voc_xml(name, image, objects))


def coco_annotations(image_id, first_id, objects):
    annotations = []
    for offset, (shape, polygon, mask) in enumerate(objects):
        x0, y0, x1, y1 = box_of(mask)
        annotations.append(dict(
            id=first_id + offset, image_id=image_id, category_id=SHAPES.index(shape) + 1,
            bbox=[x0, y0, x1 - x0, y1 - y0], area=int(mask.sum()), iscrowd=0,
            segmentation=[polygon.reshape(-1).tolist()]))
    return annotations


def generate(task, root, seed, size, num_images):
    """Write one dataset (``task`` in 'ade', 'voc', 'coco') under ``root``."""
    if task == 'ade':
        for split in SPLITS['ade']:
            for folder in ('images', 'annotations'):
                os.makedirs(osp.join(root, folder, split), exist_ok=True)
    elif task == 'voc':
        for folder in ('JPEGImages', 'Annotations', osp.join('ImageSets', 'Main')):
            os.makedirs(osp.join(root, 'VOC2007', folder), exist_ok=True)
    else:
        os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    for split_index, split in enumerate(SPLITS[task]):
        names, coco_images, coco_objects = [], [], []
        if task == 'coco':
            os.makedirs(osp.join(root, f'{split}2017'), exist_ok=True)
        for index in range(num_images[split_index]):
            rng = np.random.default_rng([seed, split_index, index])
            image, objects = make_scene(rng, size)
            name = f'{split}_{index:05d}'
            names.append(name)
            if task == 'ade':
                write_ade(root, split, name, image, objects)
            elif task == 'voc':
                write_voc(root, name, image, objects)
            else:
                cv2.imwrite(osp.join(root, f'{split}2017', f'{name}.jpg'), image)
                coco_images.append(dict(id=index + 1, file_name=f'{name}.jpg', width=size, height=size))
                coco_objects += coco_annotations(index + 1, len(coco_objects) + 1, objects)
        if task == 'voc':
            with open(osp.join(root, 'VOC2007', 'ImageSets', 'Main', f'{split}.txt'), 'w') as f:
                f.write(''.join(f'{name}\n' for name in names))
        elif task == 'coco':
            categories = [dict(id=i + 1, name=shape, supercategory='shape') for i, shape in enumerate(SHAPES)]
            with open(osp.join(root, 'annotations', f'instances_{split}2017.json'), 'w') as f:
                json.dump(dict(images=coco_images, annotations=coco_objects, categories=categories), f)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default='data/toy', help='output root (default: data/toy)')
    parser.add_argument('--tasks', nargs='+', choices=tuple(SPLITS), default=list(SPLITS),
                        help='datasets to write (default: all)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--size', type=int, default=128, help='image side in pixels (default: 128)')
    parser.add_argument('--num-train', type=int, default=200, help='training images (default: 200)')
    parser.add_argument('--num-val', type=int, default=50, help='validation/test images (default: 50)')
    parser.add_argument('--force', action='store_true', help='regenerate even if up to date')
    return parser.parse_args()


def main():
    args = parse_args()
    if args.size < 32:
        raise ValueError(f'--size must be at least 32 pixels, got {args.size}')
    settings = dict(seed=args.seed, size=args.size, num_train=args.num_train, num_val=args.num_val)
    for task in args.tasks:
        root = osp.join(args.out, task)
        stamp = osp.join(root, STAMP)
        if not args.force and osp.exists(stamp):
            with open(stamp) as f:
                if json.load(f) == settings:
                    print(f'{root}: up to date')
                    continue
        if osp.exists(root):
            shutil.rmtree(root)
        generate(task, root, args.seed, args.size, (args.num_train, args.num_val))
        with open(stamp, 'w') as f:
            json.dump(settings, f)
        print(f'{root}: {args.num_train} training and {args.num_val} validation images of {args.size}px')


if __name__ == '__main__':
    main()

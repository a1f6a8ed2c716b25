# Toy UperNet-SLaK: a small SLaK on the toy ADE20K-format data (128x128 scenes of textured circles, squares
# and triangles, see tools/dataset_converters/make_toy_data.py); trains in a few minutes on 2 CPU cores.
# It is the SLaK-T ADE20K recipe with a smaller backbone and head, small images and a short schedule:
#   python tools/dataset_converters/make_toy_data.py && python tools/train.py CONFIG
# No paper result applies; the reached mIoU is in README.md (Quick start).
_base_ = '../slak/upernet_slak-t_4xb4-160k_ade20k-512x512.py'

data_root = 'data/toy/ade'
# The toy classes among ADE20K's 150 (make_toy_data.py ADE_CLASS_IDS): background, circle, square,
# triangle. The stock ADE20KDataset maps the other 146 ADE classes to ignore.
metainfo = dict(
    classes=('wall', 'ball', 'box', 'tent'),
    palette=[[120, 120, 120], [220, 20, 60], [0, 160, 0], [30, 144, 255]])
num_classes = 4
# Small SLaK: ConvNeXt-like widths before SLaK's width_factor 1.3.
stage_channels = [int(width * 1.3) for width in (24, 48, 96, 192)]
image_size = (128, 128)
crop_size = (96, 96)

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch=dict(_delete_=True, depths=[1, 1, 2, 1], widths=[24, 48, 96, 192]),
        kernel_size=(21, 17, 13, 7),
        drop_path_rate=0.,
        init_cfg=None),
    decode_head=dict(in_channels=stage_channels, channels=64, num_classes=num_classes),
    auxiliary_head=dict(in_channels=stage_channels[2], channels=32, num_classes=num_classes),
    test_cfg=dict(_delete_=True, mode='whole'))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=1,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader

# Trained from scratch: no layer-wise decay (the recipe's decay assumes a pretrained backbone).
optim_wrapper = dict(optimizer=dict(lr=2e-3), paramwise_cfg=dict(decay_rate=1.0))
max_iters = 1000
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=max_iters // 20),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=max_iters // 20, end=max_iters)
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=50),
    checkpoint=dict(interval=max_iters // 2),
    # Draw every test batch when tools/test.py --show-dir turns drawing on (mmseg's default: every 50th).
    visualization=dict(interval=1))

# One seed for initial weights, data order and augmentation: a toy run gives the same numbers each time
# on one machine (from-scratch toy detectors otherwise vary by half their AP from run to run).
randomness = dict(seed=0)

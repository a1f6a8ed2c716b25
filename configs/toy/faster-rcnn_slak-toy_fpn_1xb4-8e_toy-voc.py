# Toy Faster R-CNN-SLaK: a small SLaK with a slim FPN and heads on the toy VOC2007-format data (128x128 scenes
# of textured circles, squares and triangles, see tools/dataset_converters/make_toy_data.py); trains in a few
# minutes on 2 CPU cores. It is the SLaK-T VOC recipe with a smaller model, small images and a short schedule:
#   python tools/dataset_converters/make_toy_data.py && python tools/train.py CONFIG
# No paper result applies; the reached mAP is in README.md (Quick start).
_base_ = '../slak/faster-rcnn_slak-t_fpn_1x_voc0712.py'

data_root = 'data/toy/voc/'
metainfo = dict(classes=('circle', 'square', 'triangle'), palette=[(220, 20, 60), (0, 160, 0), (30, 144, 255)])
# Small SLaK: ConvNeXt-like widths before SLaK's width_factor 1.3.
stage_channels = [int(width * 1.3) for width in (24, 48, 96, 192)]
fpn_channels = 64
image_size = (128, 128)

model = dict(
    backbone=dict(
        arch=dict(_delete_=True, depths=[1, 1, 2, 1], widths=[24, 48, 96, 192]),
        kernel_size=(21, 17, 13, 7),
        drop_path_rate=0.,
        init_cfg=None),
    neck=dict(in_channels=stage_channels, out_channels=fpn_channels),
    rpn_head=dict(in_channels=fpn_channels, feat_channels=fpn_channels),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=fpn_channels),
        bbox_head=dict(in_channels=fpn_channels, fc_out_channels=256, num_classes=len(metainfo['classes']))),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.8, 1.25), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size=4,
    num_workers=1,
    dataset=dict(
        _delete_=True,
        type='VOCDataset',
        data_root=data_root,
        ann_file='VOC2007/ImageSets/Main/trainval.txt',
        data_prefix=dict(sub_data_root='VOC2007/'),
        metainfo=metainfo,
        # The stock bbox_min_size=32 would ignore the toy's small objects.
        filter_cfg=dict(filter_empty_gt=True, min_size=32, bbox_min_size=None),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=1,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader

# Trained from scratch: no layer-wise decay (the recipe's decays assume a pretrained backbone).
optim_wrapper = dict(optimizer=dict(lr=1e-3), paramwise_cfg=dict(decay_rate=1.0))
max_epochs = 8
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=20),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[6], gamma=0.1)
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_epochs // 2))

# One seed for initial weights, data order and augmentation: a toy run gives the same numbers each time
# on one machine (from-scratch toy detectors otherwise vary by half their AP from run to run).
randomness = dict(seed=0)

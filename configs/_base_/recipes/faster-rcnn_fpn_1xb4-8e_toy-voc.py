# The SLaK/PeLK VOC recipe (faster-rcnn_fpn_1x_voc0712.py) on the toy VOC2007-format data, with a slim FPN
# and heads, small images and a short schedule from scratch; a few minutes on 2 CPU cores.
_base_ = ['./faster-rcnn_fpn_1x_voc0712.py', '../toy_data.py']

data_root = 'data/toy/voc/'
fpn_channels = 64

model = dict(
    neck=dict(out_channels=fpn_channels),
    rpn_head=dict(in_channels=fpn_channels, feat_channels=fpn_channels),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=fpn_channels, roi_layer=_base_.cpu_roi_layer),
        bbox_head=dict(
            in_channels=fpn_channels, fc_out_channels=256, num_classes=len(_base_.metainfo.classes))),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomResize', scale=_base_.image_size, ratio_range=(0.8, 1.25), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
# The recipe's test pipeline at the toy image size.
test_pipeline = [
    dict(step, scale=_base_.image_size) if step.type == 'Resize' else step for step in _base_.test_pipeline
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
        metainfo=_base_.metainfo,
        # The stock bbox_min_size=32 would ignore the toy's small objects.
        filter_cfg=dict(filter_empty_gt=True, min_size=32, bbox_min_size=None),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=1,
    dataset=dict(data_root=data_root, metainfo=_base_.metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader

# Trained from scratch: no layer-wise decay (the recipe's decays assume a pretrained backbone), and the
# recipe's schedule shortened to 8 epochs: 20 warm-up iterations, the lr step at epoch 6.
optim_wrapper = dict(optimizer=dict(lr=1e-3), paramwise_cfg=dict(decay_rate=1.0))
max_epochs = 8
param_scheduler = [
    dict(_base_.param_scheduler[0], end=20), dict(_base_.param_scheduler[1], end=max_epochs, milestones=[6])
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=max_epochs // 2))

# Trained from scratch: there is no sparse checkpoint whose zeros the recipe's SparseFinetuneHook would keep.
custom_hooks = []

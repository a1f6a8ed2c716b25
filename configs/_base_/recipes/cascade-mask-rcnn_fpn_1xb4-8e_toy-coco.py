# The SLaK/PeLK COCO recipe (cascade-mask-rcnn_fpn_giou-4conv1f_ms-3x_coco.py: 4conv1fc GIoU box heads,
# layer-wise lr decay) on the toy COCO-format data with polygon masks, with a slim FPN and heads, small
# images and a short schedule from scratch; a few minutes on 2 CPU cores.
_base_ = ['./cascade-mask-rcnn_fpn_giou-4conv1f_ms-3x_coco.py', '../toy_data.py']

data_root = 'data/toy/coco/'
num_classes = len(_base_.metainfo.classes)
fpn_channels = 64
# The box heads' 4 convs on 7x7 RoIs dominate a toy iteration: 32 channels and 64 sampled RoIs per image
# (the scenes hold a handful of objects) keep a run to a few minutes.
head_channels = 32
rois_per_image = 64

# The three cascade stages differ in their box coder's target stds and their IoU thresholds.
stage_target_stds = ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067])
stage_iou_thrs = (0.5, 0.6, 0.7)
model = dict(
    neck=dict(out_channels=fpn_channels),
    rpn_head=dict(in_channels=fpn_channels, feat_channels=fpn_channels),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=fpn_channels, roi_layer=_base_.cpu_roi_layer),
        bbox_head=[
            dict(
                type='ConvFCBBoxHead',
                num_shared_convs=4,
                num_shared_fcs=1,
                in_channels=fpn_channels,
                conv_out_channels=head_channels,
                fc_out_channels=256,
                roi_feat_size=7,
                num_classes=num_classes,
                bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.], target_stds=stds),
                reg_class_agnostic=False,
                reg_decoded_bbox=True,
                norm_cfg=dict(type='SyncBN', requires_grad=True),
                loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
                loss_bbox=dict(type='GIoULoss', loss_weight=10.0)) for stds in stage_target_stds
        ],
        mask_roi_extractor=dict(out_channels=fpn_channels, roi_layer=_base_.cpu_roi_layer),
        mask_head=dict(in_channels=fpn_channels, conv_out_channels=fpn_channels, num_classes=num_classes)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=[
            dict(
                assigner=dict(
                    type='MaxIoUAssigner', pos_iou_thr=iou, neg_iou_thr=iou, min_pos_iou=iou,
                    match_low_quality=False, ignore_iof_thr=-1),
                sampler=dict(type='RandomSampler', num=rois_per_image, pos_fraction=0.25, neg_pos_ub=-1,
                             add_gt_as_proposals=True),
                mask_size=28,
                pos_weight=-1,
                debug=False) for iou in stage_iou_thrs
        ]),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
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
    dataset=dict(data_root=data_root, metainfo=_base_.metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=1,
    dataset=dict(data_root=data_root, metainfo=_base_.metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

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

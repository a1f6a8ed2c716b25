# The 3x Cascade Mask R-CNN recipe with the 1x schedule: 12 epochs, steps at 8 and 11.
_base_ = './cascade-mask-rcnn_fpn_giou-4conv1f_ms-3x_coco.py'

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11], gamma=0.1)
]

# Cascade Mask R-CNN with FPN and a SLaK-T backbone on COCO, 1x schedule (12 epochs, steps at 8 and 11).
# Reported in the SLaK paper (ICLR 2023): 48.4 box AP / 41.8 mask AP with a 120-epoch ImageNet backbone.
_base_ = ['../_base_/recipes/cascade-mask-rcnn_fpn_giou-4conv1f_ms-1x_coco.py', '../_base_/models/slak-t.py']

model = dict(backbone=_base_.backbone, neck=dict(in_channels=_base_.stage_channels))

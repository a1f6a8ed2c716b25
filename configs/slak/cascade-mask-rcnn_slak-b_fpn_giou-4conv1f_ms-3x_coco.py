# Cascade Mask R-CNN with FPN and a SLaK-B backbone on COCO, 3x schedule (36 epochs), total batch 16.
# Reported in the PeLK paper (CVPR 2024) for SLaK-B: 52.5 box AP / 45.5 mask AP.
_base_ = ['../_base_/recipes/cascade-mask-rcnn_fpn_giou-4conv1f_ms-3x_coco.py', '../_base_/models/slak-b.py']

model = dict(backbone=_base_.backbone, neck=dict(in_channels=_base_.stage_channels))

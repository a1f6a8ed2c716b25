# Cascade Mask R-CNN with FPN and a PeLK-S backbone on COCO, 3x schedule (36 epochs), total batch 16.
# Reported in the PeLK paper (CVPR 2024): 52.2 box AP / 45.3 mask AP.
_base_ = ['../_base_/recipes/cascade-mask-rcnn_fpn_giou-4conv1f_ms-3x_coco.py', '../_base_/models/pelk-s.py']

model = dict(backbone=_base_.backbone, neck=dict(in_channels=_base_.stage_channels))

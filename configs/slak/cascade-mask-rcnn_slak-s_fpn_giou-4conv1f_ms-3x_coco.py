# Cascade Mask R-CNN with FPN and a SLaK-S backbone on COCO, 3x schedule (36 epochs), total batch 16.
# Reported result: none; neither the SLaK nor the PeLK paper gives COCO numbers for SLaK-S.
_base_ = ['../_base_/recipes/cascade-mask-rcnn_fpn_giou-4conv1f_ms-3x_coco.py', '../_base_/models/slak-s.py']

model = dict(backbone=_base_.backbone, neck=dict(in_channels=_base_.stage_channels))

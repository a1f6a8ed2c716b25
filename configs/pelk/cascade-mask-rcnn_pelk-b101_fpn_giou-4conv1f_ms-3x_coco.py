# Cascade Mask R-CNN with FPN and a PeLK-B-101 backbone (kernels 101, 69, 67, 13; ImageNet-pretrained at
# 384x384) on COCO, 3x schedule (36 epochs), total batch 16.
# Reported in the PeLK paper (CVPR 2024): 53.1 box AP / 46.1 mask AP.
_base_ = ['../_base_/recipes/cascade-mask-rcnn_fpn_giou-4conv1f_ms-3x_coco.py', '../_base_/models/pelk-b101.py']

model = dict(backbone=_base_.backbone, neck=dict(in_channels=_base_.stage_channels))

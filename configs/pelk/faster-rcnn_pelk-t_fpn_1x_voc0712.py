# Faster R-CNN with FPN and a PeLK-T backbone on PASCAL VOC: trained on VOC2007+2012 trainval, tested on
# VOC2007 test (MMDetection's VOC0712 recipe with AdamW and layer-wise lr decay).
# Reported result: none; the PeLK paper has no VOC experiment.
_base_ = ['../_base_/recipes/faster-rcnn_fpn_1x_voc0712.py', '../_base_/models/pelk-t.py']

model = dict(backbone=_base_.backbone, neck=dict(in_channels=_base_.stage_channels))

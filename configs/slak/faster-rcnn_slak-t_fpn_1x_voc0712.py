# Faster R-CNN with FPN and a SLaK-T backbone on PASCAL VOC: trained on VOC2007+2012 trainval, tested on
# VOC2007 test, 1000x600. MMDetection's VOC0712 recipe (4 epochs over the 3x-repeated set, step at 3)
# with the ConvNeXt-style AdamW and layer-wise lr decay; the official SLaK release ships no VOC config.
# Reported result: none that our design notes record (shared/DESIGN.md lists no VOC number for SLaK);
# this config is the suite's own VOC baseline, to be filled in from a real run.
_base_ = ['../_base_/recipes/faster-rcnn_fpn_1x_voc0712.py', '../_base_/models/slak-t.py']

model = dict(backbone=_base_.backbone, neck=dict(in_channels=_base_.stage_channels))

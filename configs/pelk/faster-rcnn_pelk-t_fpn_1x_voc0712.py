# Faster R-CNN with FPN and a PeLK-T backbone on PASCAL VOC: trained on VOC2007+2012 trainval, tested on
# VOC2007 test (MMDetection's VOC0712 recipe with AdamW and layer-wise lr decay).
# Reported result: none; the PeLK paper has no VOC experiment.
# PeLK keeps SLaK's skeleton and stage widths, so this is the SLaK recipe with the backbone swapped.
_base_ = '../slak/faster-rcnn_slak-t_fpn_1x_voc0712.py'

checkpoint_file = 'checkpoints/pelk-t_in1k.pth'

model = dict(backbone=dict(type='PeLK', init_cfg=dict(checkpoint=checkpoint_file)))

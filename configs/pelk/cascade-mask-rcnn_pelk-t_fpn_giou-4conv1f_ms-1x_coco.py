# Cascade Mask R-CNN with FPN and a PeLK-T backbone on COCO, 1x schedule (12 epochs, steps at 8 and 11).
# Reported result: none for 1x; the PeLK paper's 51.4 box AP / 44.6 mask AP are for 3x.
# PeLK keeps SLaK's skeleton and stage widths, so this is the SLaK recipe with the backbone swapped.
_base_ = '../slak/cascade-mask-rcnn_slak-t_fpn_giou-4conv1f_ms-1x_coco.py'

checkpoint_file = 'checkpoints/pelk-t_in1k.pth'

model = dict(backbone=dict(type='PeLK', init_cfg=dict(checkpoint=checkpoint_file)))

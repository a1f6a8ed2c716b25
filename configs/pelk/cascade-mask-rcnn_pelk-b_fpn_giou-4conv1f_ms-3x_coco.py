# Cascade Mask R-CNN with FPN and a PeLK-B backbone on COCO, 3x schedule (36 epochs), total batch 16.
# Reported in the PeLK paper (CVPR 2024): 52.9 box AP / 45.9 mask AP.
# PeLK keeps SLaK's skeleton and stage widths, so this is the SLaK recipe with the backbone swapped.
_base_ = '../slak/cascade-mask-rcnn_slak-b_fpn_giou-4conv1f_ms-3x_coco.py'

checkpoint_file = 'checkpoints/pelk-b_in1k.pth'

model = dict(backbone=dict(type='PeLK', init_cfg=dict(checkpoint=checkpoint_file)))

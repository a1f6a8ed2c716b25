# Cascade Mask R-CNN with FPN and a PeLK-B-101 backbone (kernels 101, 69, 67, 13; ImageNet-pretrained at
# 384x384) on COCO, 3x schedule (36 epochs), total batch 16.
# Reported in the PeLK paper (CVPR 2024): 53.1 box AP / 46.1 mask AP.
# PeLK keeps SLaK's skeleton and stage widths, so this is the SLaK recipe with the backbone swapped.
_base_ = '../slak/cascade-mask-rcnn_slak-b_fpn_giou-4conv1f_ms-3x_coco.py'

checkpoint_file = 'checkpoints/pelk-b101_in1k-384px.pth'

# kernel_size=None takes the arch's kernels instead of the (51, 49, 47, 13) of the SLaK-B config.
model = dict(
    backbone=dict(
        type='PeLK', arch='base-101', kernel_size=None, init_cfg=dict(checkpoint=checkpoint_file)))

# Cascade Mask R-CNN with FPN and a SLaK-B backbone on COCO, 3x schedule (36 epochs), total batch 16.
# Reported in the PeLK paper (CVPR 2024) for SLaK-B: 52.5 box AP / 45.5 mask AP.
_base_ = './cascade-mask-rcnn_slak-t_fpn_giou-4conv1f_ms-3x_coco.py'

checkpoint_file = 'checkpoints/slak-b_in1k.pth'
# Stage widths: SLaK.arch_settings['base'] widths times the default width_factor 1.3.
stage_channels = [int(width * 1.3) for width in (128, 256, 512, 1024)]

model = dict(
    backbone=dict(
        arch='base',
        init_cfg=dict(checkpoint=checkpoint_file)),
    neck=dict(in_channels=stage_channels))

optim_wrapper = dict(paramwise_cfg=dict(num_layers=12))

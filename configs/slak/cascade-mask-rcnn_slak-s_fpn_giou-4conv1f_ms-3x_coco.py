# Cascade Mask R-CNN with FPN and a SLaK-S backbone on COCO, 3x schedule (36 epochs), total batch 16.
# Reported result: none; neither the SLaK nor the PeLK paper gives COCO numbers for SLaK-S.
_base_ = './cascade-mask-rcnn_slak-t_fpn_giou-4conv1f_ms-3x_coco.py'

checkpoint_file = 'checkpoints/slak-s_in1k.pth'
# Stage widths: SLaK.arch_settings['small'] widths times the default width_factor 1.3.
stage_channels = [int(width * 1.3) for width in (96, 192, 384, 768)]

model = dict(
    backbone=dict(
        arch='small',
        init_cfg=dict(checkpoint=checkpoint_file)),
    neck=dict(in_channels=stage_channels))

optim_wrapper = dict(paramwise_cfg=dict(num_layers=12))

# UperNet with a SLaK-S backbone on ADE20K, 512x512 crops, 160k iterations, total batch 16.
# Reported in the SLaK paper (ICLR 2023): 49.4 mIoU.
_base_ = './upernet_slak-t_4xb4-160k_ade20k-512x512.py'

checkpoint_file = 'checkpoints/slak-s_in1k.pth'
# Stage widths: SLaK.arch_settings['small'] widths times the default width_factor 1.3.
stage_channels = [int(width * 1.3) for width in (96, 192, 384, 768)]

model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=stage_channels),
    auxiliary_head=dict(in_channels=stage_channels[2]))

optim_wrapper = dict(paramwise_cfg=dict(num_layers=12))

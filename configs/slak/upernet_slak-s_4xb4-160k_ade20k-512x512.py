# UperNet with a SLaK-S backbone on ADE20K, 512x512 crops, 160k iterations, total batch 16.
# Reported in the SLaK paper (ICLR 2023): 49.4 mIoU.
_base_ = ['../_base_/recipes/upernet_4xb4-160k_ade20k-512x512.py', '../_base_/models/slak-s.py']

model = dict(
    backbone=dict(_base_.backbone, drop_path_rate=0.3),
    decode_head=dict(in_channels=_base_.stage_channels),
    auxiliary_head=dict(in_channels=_base_.stage_channels[2]))

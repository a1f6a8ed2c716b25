# UperNet with a PeLK-B backbone on ADE20K, 512x512 crops, 160k iterations, total batch 16.
# Reported in the PeLK paper (CVPR 2024): 50.4 mIoU.
_base_ = ['../_base_/recipes/upernet_4xb4-160k_ade20k-512x512.py', '../_base_/models/pelk-b.py']

model = dict(
    backbone=_base_.backbone,
    decode_head=dict(in_channels=_base_.stage_channels),
    auxiliary_head=dict(in_channels=_base_.stage_channels[2]))

# UperNet with a PeLK-B-101 backbone (kernels 101, 69, 67, 13; ImageNet-pretrained at 384x384) on ADE20K,
# 512x512 crops, 160k iterations, total batch 16.
# Reported in the PeLK paper (CVPR 2024): 50.6 mIoU.
_base_ = ['../_base_/recipes/upernet_4xb4-160k_ade20k-512x512.py', '../_base_/models/pelk-b101.py']

model = dict(
    backbone=_base_.backbone,
    decode_head=dict(in_channels=_base_.stage_channels),
    auxiliary_head=dict(in_channels=_base_.stage_channels[2]))

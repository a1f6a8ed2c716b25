# UperNet with a SLaK-B backbone on ADE20K, 512x512 crops, 160k iterations, total batch 16.
# Reported in the SLaK paper (ICLR 2023): 50.0 mIoU.
_base_ = ['../_base_/recipes/upernet_4xb4-160k_ade20k-512x512.py', '../_base_/models/slak-b.py']

model = dict(
    backbone=_base_.backbone,
    decode_head=dict(in_channels=_base_.stage_channels),
    auxiliary_head=dict(in_channels=_base_.stage_channels[2]))

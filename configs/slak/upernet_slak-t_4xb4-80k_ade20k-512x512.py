# UperNet with a SLaK-T backbone on ADE20K, 512x512 crops, 80k iterations, total batch 16: the short
# schedule of the SLaK ablations (AdamW 2e-4 without layer decay, no weight decay on norms).
# Reported result: none quoted here for 80k; the SLaK paper's 47.6 mIoU is for the 160k schedule
# (upernet_slak-t_4xb4-160k_ade20k-512x512.py).
_base_ = ['../_base_/recipes/upernet_4xb4-80k_ade20k-512x512.py', '../_base_/models/slak-t.py']

model = dict(
    backbone=dict(_base_.backbone, drop_path_rate=0.1),
    decode_head=dict(in_channels=_base_.stage_channels),
    auxiliary_head=dict(in_channels=_base_.stage_channels[2]))

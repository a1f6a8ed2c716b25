# UperNet with a PeLK-T backbone on ADE20K, 512x512 crops, 160k iterations, total batch 16.
# Reported in the PeLK paper (CVPR 2024): 48.1 mIoU.
# PeLK keeps SLaK's skeleton and stage widths, so this is the SLaK recipe with the backbone swapped.
_base_ = '../slak/upernet_slak-t_4xb4-160k_ade20k-512x512.py'

checkpoint_file = 'checkpoints/pelk-t_in1k.pth'

model = dict(backbone=dict(type='PeLK', init_cfg=dict(checkpoint=checkpoint_file)))

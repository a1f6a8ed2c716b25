# UperNet with a PeLK-B-101 backbone (kernels 101, 69, 67, 13; ImageNet-pretrained at 384x384) on ADE20K,
# 512x512 crops, 160k iterations, total batch 16.
# Reported in the PeLK paper (CVPR 2024): 50.6 mIoU.
# PeLK keeps SLaK's skeleton and stage widths, so this is the SLaK recipe with the backbone swapped.
_base_ = '../slak/upernet_slak-b_4xb4-160k_ade20k-512x512.py'

checkpoint_file = 'checkpoints/pelk-b101_in1k-384px.pth'

# kernel_size=None takes the arch's kernels instead of the (51, 49, 47, 13) of the SLaK-B config.
model = dict(
    backbone=dict(
        type='PeLK', arch='base-101', kernel_size=None, init_cfg=dict(checkpoint=checkpoint_file)))

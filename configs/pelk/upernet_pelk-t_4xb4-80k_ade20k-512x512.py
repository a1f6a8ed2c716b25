# UperNet with a PeLK-T backbone on ADE20K, 512x512 crops, 80k iterations, total batch 16 (AdamW 2e-4
# without layer decay, no weight decay on norms).
# Reported result: none for 80k; the PeLK paper's 48.1 mIoU is for the 160k schedule.
# PeLK keeps SLaK's skeleton and stage widths, so this is the SLaK recipe with the backbone swapped.
_base_ = '../slak/upernet_slak-t_4xb4-80k_ade20k-512x512.py'

checkpoint_file = 'checkpoints/pelk-t_in1k.pth'

model = dict(backbone=dict(type='PeLK', init_cfg=dict(checkpoint=checkpoint_file)))

# UperNet with a SLaK-T backbone on ADE20K, 512x512 crops, 80k iterations, total batch 16: the short
# schedule of the SLaK ablations (AdamW 2e-4 without layer decay, no weight decay on norms).
# Reported result: none quoted here for 80k; the SLaK paper's 47.6 mIoU is for the 160k schedule
# (upernet_slak-t_4xb4-160k_ade20k-512x512.py).
_base_ = './upernet_slak-t_4xb4-160k_ade20k-512x512.py'

model = dict(backbone=dict(drop_path_rate=0.1))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.))

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=800),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=800, end=80000)
]

train_cfg = dict(max_iters=80000)

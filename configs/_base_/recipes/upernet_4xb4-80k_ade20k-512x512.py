# The short UperNet schedule of the SLaK ablations: 80k iterations, AdamW 2e-4 without layer decay, no
# weight decay on norms, 800-iteration warm-up (task configs set drop path 0.1 on the backbone).
_base_ = './upernet_4xb4-160k_ade20k-512x512.py'

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

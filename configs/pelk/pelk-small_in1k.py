# PeLK-S on ImageNet-1k, 224x224: SLaK-S's recipe (slak-small_in1k.py) with the PeLK backbone.
# Reported in the PeLK paper (CVPR 2024): 83.9 top-1.
_base_ = '../slak/slak-small_in1k.py'

model = dict(
    backbone=dict(_delete_=True, type='PeLK', arch='small', drop_path_rate=0.4, layer_scale_init_value=1e-6))

# The positional embeddings get no weight decay, like the norms and biases.
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'pos_embed': dict(decay_mult=0.)}))

# PeLK-T on ImageNet-1k, 224x224. PeLK keeps SLaK's recipe (slak-tiny_in1k.py: 300 epochs, AdamW lr 4e-3
# at batch 4096, EMA, drop path 0.1, 40% dynamic sparsity); only the backbone changes.
# Reported in the PeLK paper (CVPR 2024): 82.6 top-1.
_base_ = '../slak/slak-tiny_in1k.py'

model = dict(
    backbone=dict(_delete_=True, type='PeLK', arch='tiny', drop_path_rate=0.1, layer_scale_init_value=1e-6))

# The positional embeddings get no weight decay, like the norms and biases.
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'pos_embed': dict(decay_mult=0.)}))

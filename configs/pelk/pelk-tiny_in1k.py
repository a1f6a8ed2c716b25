# PeLK-T on ImageNet-1k, 224x224. PeLK keeps SLaK's recipe (configs/_base_/recipes/in1k_bs4096-300e_sparse.py:
# 300 epochs, AdamW lr 4e-3 at batch 4096, EMA, 40% dynamic sparsity) with drop path 0.1 and layer scale 1e-6.
# Reported in the PeLK paper (CVPR 2024): 82.6 top-1.
_base_ = '../_base_/recipes/in1k_bs4096-300e_sparse.py'
# Imports come after `_base_`: mmengine reads a config that starts with one as a pure-Python config.
import mmslak.models.backbones.pelk as pelk

backbone = dict(type='PeLK', arch='tiny', drop_path_rate=0.1, layer_scale_init_value=1e-6)
model = dict(backbone=backbone, head=dict(in_channels=pelk.PeLK.arch_widths(backbone['arch'])[-1]))

# The positional embeddings get no weight decay, like the norms and biases.
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'pos_embed': dict(decay_mult=0.)}))

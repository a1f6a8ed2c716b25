# SLaK-T on ImageNet-1k with the official recipe (configs/_base_/recipes/in1k_bs4096-300e_sparse.py: 300
# epochs, AdamW lr 4e-3 at batch 4096, EMA, 40% dynamic sparsity), drop path 0.1 and layer scale 1e-6.
# Backbone + head correspond one to one to the official classifier: converted official checkpoints
# (tools/model_converters/slak2mmslak.py) load strictly.
_base_ = '../_base_/recipes/in1k_bs4096-300e_sparse.py'
# Imports come after `_base_`: mmengine reads a config that starts with one as a pure-Python config.
import mmslak.models.backbones.slak as slak

backbone = dict(
    type='SLaK',
    arch='tiny',
    kernel_size=(51, 49, 47, 13),
    short_kernel=5,
    width_factor=1.3,
    decompose=True,
    drop_path_rate=0.1,
    layer_scale_init_value=1e-6)
model = dict(backbone=backbone, head=dict(in_channels=slak.SLaK.arch_widths(backbone['arch'])[-1]))

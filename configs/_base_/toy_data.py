# What the toy configs (configs/toy) share: the data of tools/dataset_converters/make_toy_data.py, 128x128
# scenes of textured circles, squares and triangles, and one training seed.
metainfo = dict(classes=('circle', 'square', 'triangle'), palette=[(220, 20, 60), (0, 160, 0), (30, 144, 255)])
image_size = (128, 128)

# The RoI layer of the toy detectors: torchvision's RoIAlign gives the same outputs and gradients as mmcv's,
# bit for bit (tests/downstream/test_toy_roi_layer.py), and is faster on the CPU, where the toy runs train.
cpu_roi_layer = dict(use_torchvision=True)

# One seed for initial weights, data order and augmentation: a toy run gives the same numbers each time
# on one machine (from-scratch toy detectors otherwise vary by half their AP from run to run).
randomness = dict(seed=0)

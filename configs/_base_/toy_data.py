# What the toy configs (configs/toy) share: the data of tools/dataset_converters/make_toy_data.py, 128x128
# scenes of textured circles, squares and triangles, and one training seed.
metainfo = dict(classes=('circle', 'square', 'triangle'), palette=[(220, 20, 60), (0, 160, 0), (30, 144, 255)])
image_size = (128, 128)

# One seed for initial weights, data order and augmentation: a toy run gives the same numbers each time
# on one machine (from-scratch toy detectors otherwise vary by half their AP from run to run).
randomness = dict(seed=0)

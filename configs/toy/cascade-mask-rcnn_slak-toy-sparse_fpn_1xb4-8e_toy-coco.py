# The toy Cascade Mask R-CNN-SLaK trained with SLaK's dynamic sparsity: 40% of the backbone's conv and
# linear weights are zero throughout training (SNIP layer densities, random masks), and once per epoch
# (50 iterations of 200 images at batch 4) 30% of each layer's active weights, cosine-decayed, are pruned
# by magnitude and regrown at random. See docs/sparse_training.md.
#   python tools/dataset_converters/make_toy_data.py && python tools/train.py CONFIG
# tools/analysis/get_flops.py CONFIG --checkpoint work_dirs/.../epoch_8.pth counts the non-zero weights.
_base_ = './cascade-mask-rcnn_slak-toy_fpn_1xb4-8e_toy-coco.py'

custom_hooks = [
    dict(type='SparseTrainingHook', sparsity=0.4, init='snip', growth='random', update_interval=50,
         prune_rate=0.3)
]

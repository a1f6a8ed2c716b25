# The SLaK/PeLK ADE20K recipe (upernet_4xb4-160k_ade20k-512x512.py) on the toy ADE20K-format data, with a
# smaller head, small images and a short schedule from scratch; a few minutes on 2 CPU cores.
_base_ = ['./upernet_4xb4-160k_ade20k-512x512.py', '../toy_data.py']

data_root = 'data/toy/ade'
# The toy classes among ADE20K's 150 (make_toy_data.py ADE_CLASS_IDS): background, circle, square,
# triangle. The stock ADE20KDataset maps the other 146 ADE classes to ignore.
metainfo = dict(classes=('wall', 'ball', 'box', 'tent'), palette=[(120, 120, 120), *_base_.metainfo.palette])
num_classes = len(metainfo['classes'])
crop_size = (96, 96)

model = dict(
    data_preprocessor=dict(size=crop_size),
    decode_head=dict(channels=64, num_classes=num_classes),
    auxiliary_head=dict(channels=32, num_classes=num_classes),
    test_cfg=dict(_delete_=True, mode='whole'))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=_base_.image_size, ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
# The recipe's test pipeline at the toy image size.
test_pipeline = [
    dict(step, scale=_base_.image_size) if step.type == 'Resize' else step for step in _base_.test_pipeline
]
train_dataloader = dict(
    batch_size=8, num_workers=1, dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8, num_workers=1, dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader

# Trained from scratch: no layer-wise decay (the recipe's decay assumes a pretrained backbone), and the
# recipe's schedule shortened to 1000 iterations, the first 5% a warm-up from 1e-3 of the lr.
optim_wrapper = dict(optimizer=dict(lr=2e-3), paramwise_cfg=dict(decay_rate=1.0))
max_iters = 1000
param_scheduler = [
    dict(_base_.param_scheduler[0], start_factor=1e-3, end=max_iters // 20),
    dict(_base_.param_scheduler[1], begin=max_iters // 20, end=max_iters)
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=50),
    checkpoint=dict(interval=max_iters // 2),
    # Draw every test batch when tools/test.py --show-dir turns drawing on (mmseg's default: every 50th).
    visualization=dict(interval=1))

# Trained from scratch: there is no sparse checkpoint whose zeros the recipe's SparseFinetuneHook would keep.
custom_hooks = []

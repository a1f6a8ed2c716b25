# Faster R-CNN with FPN on PASCAL VOC: trained on VOC2007+2012 trainval, tested on VOC2007 test, 1000x600.
# MMDetection's VOC0712 recipe (4 epochs over the 3x-repeated set, step at 3) with the ConvNeXt-style AdamW
# and layer-wise lr decay, and a sparse checkpoint's zeros kept; the official SLaK release ships no VOC
# config. A task config adds a backbone from configs/_base_/models.
_base_ = ['mmdet::pascal_voc/faster-rcnn_r50_fpn_1x_voc0712.py', '../sparse-finetune_runtime.py']
custom_imports = dict(imports=['mmslak'], allow_failed_imports=False)

optim_wrapper = dict(
    _delete_=True, type='OptimWrapper', constructor='LargeKernelLayerDecayOptimizerConstructor',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(decay_rate=0.7, decay_type='layer_wise'))

max_epochs = 4  # of the 3x-repeated VOC0712 trainval set: 12 passes over the data
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[3], gamma=0.1)
]

# VOC mAP at IoU 0.5 as the area under the precision/recall curve (VOC2010+ protocol) rather than
# MMDetection's default 11-point interpolation; mmslak's VOCMetric names a custom-class dataset's own classes.
val_evaluator = dict(type='mmslak.CustomClassVOCMetric', eval_mode='area')
test_evaluator = val_evaluator

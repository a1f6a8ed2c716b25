"""VOC mAP whose per-class table names the dataset's own classes."""
import copy

from mmdet.datasets import VOCDataset
from mmdet.evaluation import VOCMetric

from mmslak.registry import METRICS, register_module


@register_module(METRICS)
class CustomClassVOCMetric(VOCMetric):
    """MMDetection's ``VOCMetric`` for VOC-format datasets with any classes.

    ``VOCDataset`` tags its metainfo ``dataset_type='VOC2007'`` (or ``'VOC2012'``) from the folder name alone,
    and ``VOCMetric`` then prints PASCAL VOC's class names (aeroplane, bicycle, bird, ...) for the first rows
    of its table, whatever the dataset's ``metainfo.classes`` are, and warns about the VOC protocol's
    interpolation. For a dataset whose classes are not PASCAL VOC's, this metric drops that tag, so the table
    names the dataset's classes; the numbers are the same. With PASCAL VOC's classes it is ``VOCMetric``.

    Args: those of :class:`mmdet.evaluation.VOCMetric`.

    Example:
        >>> val_evaluator = dict(type='mmslak.CustomClassVOCMetric', eval_mode='area')
    """

    @property
    def dataset_meta(self):
        return self._dataset_meta

    @dataset_meta.setter
    def dataset_meta(self, dataset_meta):
        dataset_meta = copy.deepcopy(dataset_meta)
        if dataset_meta is not None and tuple(dataset_meta.get('classes', ())) != VOCDataset.METAINFO['classes']:
            dataset_meta.pop('dataset_type', None)
        self._dataset_meta = dataset_meta

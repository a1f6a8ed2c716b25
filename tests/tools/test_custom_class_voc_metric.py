"""The VOC evaluation table names the dataset's own classes (mmdet's VOCMetric prints PASCAL VOC's)."""
import pytest
import torch
from mmengine.logging import MMLogger
from mmengine.registry import METRICS, DefaultScope

import mmslak  # noqa: F401

TOY_CLASSES = ('circle', 'square', 'triangle')


def evaluate(metric_type, classes, log_file):
    """One image with one box per class: circle found exactly (AP 1), square found after a false positive
    (precision 1/2 at full recall: AP 0.5 under 'area'), triangle missed (AP 0); mAP = 0.5."""
    with DefaultScope.overwrite_default_scope('mmdet'):
        metric = METRICS.build(dict(type=metric_type, eval_mode='area'))
    # VOCDataset tags any data under a VOC2007 folder like this, whatever its classes
    metric.dataset_meta = dict(classes=classes, dataset_type='VOC2007')
    boxes = torch.tensor([[0., 0., 10., 10.], [20., 20., 30., 30.], [40., 40., 50., 50.]])
    sample = dict(
        gt_instances=dict(bboxes=boxes, labels=torch.tensor([0, 1, 2])),
        ignored_instances=dict(bboxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long)),
        pred_instances=dict(bboxes=torch.stack([boxes[0], torch.tensor([60., 60., 70., 70.]), boxes[1]]),
                            scores=torch.tensor([0.9, 0.8, 0.5]), labels=torch.tensor([0, 1, 1])))
    MMLogger.get_instance(f'voc-{metric_type}-{len(classes)}', log_file=str(log_file))
    metric.process({}, [sample])
    return metric.evaluate(size=1), log_file.read_text()


def test_the_table_names_the_dataset_classes(tmp_path):
    results, log = evaluate('mmslak.CustomClassVOCMetric', TOY_CLASSES, tmp_path / 'ours.log')
    assert results['pascal_voc/mAP'] == pytest.approx(0.5)
    rows = {line.split('|')[1].strip(): line.split('|')[-2].strip() for line in log.splitlines()
            if line.startswith('| ') and line.split('|')[1].strip() in TOY_CLASSES}
    assert rows == {'circle': '1.000', 'square': '0.500', 'triangle': '0.000'}
    assert 'aeroplane' not in log


@pytest.mark.filterwarnings('ignore:Pascal VOC2007 uses')  # the stock metric's protocol note
def test_stock_voc_metric_prints_pascal_names_for_the_same_data(tmp_path):
    """The defect this metric exists for; same numbers, wrong names."""
    results, log = evaluate('VOCMetric', TOY_CLASSES, tmp_path / 'stock.log')
    assert results['pascal_voc/mAP'] == pytest.approx(0.5)
    assert 'aeroplane' in log and 'circle' not in log


def test_pascal_voc_itself_keeps_the_voc_protocol():
    from mmdet.datasets import VOCDataset
    with DefaultScope.overwrite_default_scope('mmdet'):
        metric = METRICS.build(dict(type='mmslak.CustomClassVOCMetric'))
    metric.dataset_meta = dict(VOCDataset.METAINFO, dataset_type='VOC2007')
    assert metric.dataset_meta['dataset_type'] == 'VOC2007'

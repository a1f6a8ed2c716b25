"""Evaluation metrics; they need mmdet, so configs name them with the scope: ``type='mmslak.<name>'``."""
from .voc_metric import CustomClassVOCMetric

__all__ = ['CustomClassVOCMetric']

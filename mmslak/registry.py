"""The one place that makes mmslak's modules visible to MMDetection, MMSegmentation and MMPretrain.

Every mmslak class is registered twice by :func:`register_module`:

* in mmslak's own registries (scope ``mmslak``), so ``type='mmslak.SLaK'`` works from any scope;
* in MMEngine's root registries, which are the parents of mmdet's, mmseg's and mmpretrain's registries,
  so ``type='SLaK'`` works inside ``default_scope='mmdet'`` (or ``mmseg``, ``mmpretrain``) because a
  registry that misses a key asks its parent.

Importing this module does not import mmdet, mmseg or mmpretrain.
"""
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import \
    OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import Registry

MODELS = Registry(
    'model', parent=MMENGINE_MODELS, scope='mmslak', locations=['mmslak.models'])
HOOKS = Registry(
    'hook', parent=MMENGINE_HOOKS, scope='mmslak', locations=['mmslak.engine'])
OPTIM_WRAPPER_CONSTRUCTORS = Registry(
    'optimizer wrapper constructor',
    parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS,
    scope='mmslak',
    locations=['mmslak.engine'])
OPTIM_WRAPPERS = Registry(
    'optim_wrapper', parent=MMENGINE_OPTIM_WRAPPERS, scope='mmslak', locations=['mmslak.engine'])
MODEL_WRAPPERS = Registry(
    'model_wrapper', parent=MMENGINE_MODEL_WRAPPERS, scope='mmslak', locations=['mmslak.engine'])
# mmslak.evaluation imports mmdet: it is imported when a config names one of its metrics as 'mmslak.<name>'.
METRICS = Registry('metric', parent=MMENGINE_METRICS, scope='mmslak', locations=['mmslak.evaluation'])


def register_module(registry, name=None):
    """Class decorator: register into ``registry`` (an mmslak registry) and into its MMEngine parent.

    Args:
        registry (Registry): one of the registries of this module.
        name (str, optional): registered name; defaults to the class name.

    Example:
        >>> @register_module(MODELS)
        ... class SLaK(BaseModule): ...
    """

    def decorator(cls):
        registry.register_module(name=name, module=cls)
        registry.parent.register_module(name=name, module=cls)
        return cls

    return decorator

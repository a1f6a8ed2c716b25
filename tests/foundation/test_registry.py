"""Every mmslak module is buildable from mmdet, mmseg and mmpretrain, by plain and by scoped name."""
import importlib

import pytest

import mmslak.registry as ours

DOWNSTREAM = ['mmdet', 'mmseg', 'mmpretrain']
REGISTRIES = ['MODELS', 'HOOKS', 'OPTIM_WRAPPER_CONSTRUCTORS', 'OPTIM_WRAPPERS', 'MODEL_WRAPPERS']


def registered():
    import mmslak  # noqa: F401  (registration happens on import)
    return [(registry, name) for registry in REGISTRIES
            for name in getattr(ours, registry).module_dict]


def test_core_modules_are_registered():
    names = {name for _, name in registered()}
    assert {'SLaK', 'CPUAmpOptimWrapper', 'CPUDistributedDataParallel'} <= names


@pytest.mark.parametrize('package', DOWNSTREAM)
def test_resolvable_from_downstream_scopes(package):
    downstream = importlib.import_module(f'{package}.registry')
    for registry, name in registered():
        cls = getattr(ours, registry).get(name)
        theirs = getattr(downstream, registry)
        with theirs.switch_scope_and_registry(package) as scoped:
            assert scoped.get(name) is cls, f'{package} {registry} cannot find {name}'
            assert scoped.get(f'mmslak.{name}') is cls, f'{package} {registry} cannot find mmslak.{name}'


def test_build_backbone_from_mmdet_config_scope():
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'):
        backbone = MODELS.build(dict(type='SLaK', arch=dict(depths=[1, 1, 1, 1], widths=[8, 16, 32, 64]),
                                     kernel_size=(7, 7, 5, 5), short_kernel=3, out_indices=(0, 1, 2, 3)))
    assert type(backbone).__name__ == 'SLaK'

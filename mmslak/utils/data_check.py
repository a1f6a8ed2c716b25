"""Data problems reported as one line naming what to fix, instead of tracebacks from deep inside the stack.

* :func:`check_data_paths`: before the Runner is built, the data roots, annotation files and data folders of
  the dataloaders a run will build must exist (a missing ADE20K otherwise ends in a 30-line traceback from
  mmengine's file listing).
* :func:`check_class_counts`: the heads' ``num_classes`` must match the dataset classes (mmseg otherwise dies
  with an IndexError in ``_update_palette``, mmdet trains with a wrong head).
* :func:`describe_data_error`: while a run builds or reads its data, a malformed annotation file (JSON, XML)
  or an image that cannot be decoded is named.
"""
import json
import os.path as osp
import re
import traceback
import xml.etree.ElementTree as ET
from contextlib import contextmanager

from mmengine.registry import DATASETS, DefaultScope

from mmslak.utils.cli import UserError

DATASETS_HELP = 'see README.md, section "The real datasets"'
TOY_DATA_HELP = 'generate it with: python tools/dataset_converters/make_toy_data.py'
# Which dataloaders each tool builds (the Runner builds the val loop only when all three keys are set).
TRAIN_LOADERS = ('train_dataloader', 'val_dataloader')
TEST_LOADERS = ('test_dataloader', )


def _help_for(path):
    return TOY_DATA_HELP if 'data/toy' in path.replace(osp.sep, '/') else DATASETS_HELP


def leaf_datasets(dataset, key):
    """Yield ``(config key, dataset config)`` of the datasets inside wrappers (Repeat, Concat, ClassBalanced...)."""
    if not isinstance(dataset, dict):
        return
    if isinstance(dataset.get('dataset'), dict):
        yield from leaf_datasets(dataset['dataset'], f'{key}.dataset')
    elif isinstance(dataset.get('datasets'), (list, tuple)):
        for index, child in enumerate(dataset['datasets']):
            yield from leaf_datasets(child, f'{key}.datasets.{index}')
    else:
        yield key, dataset


def built_dataloaders(cfg, loaders):
    """The dataloader keys among ``loaders`` whose datasets the Runner will build from ``cfg``."""
    built = []
    for name in loaders:
        if not cfg.get(name):
            continue
        if name == 'val_dataloader' and not (cfg.get('val_cfg') and cfg.get('val_evaluator')):
            continue
        built.append(name)
    return built


def _is_remote(path, dataset):
    backend = (dataset.get('backend_args') or {}).get('backend', 'local')
    return '://' in path or backend != 'local'


def check_data_paths(cfg, loaders):
    """Refuse a run whose data root, annotation file or data folder does not exist, before anything is built.

    Paths are joined the way MMEngine's ``BaseDataset`` joins them (``ann_file`` and ``data_prefix`` values
    under ``data_root`` unless absolute). Remote paths (``s3://``, a ``backend_args`` backend) are not checked.

    Args:
        cfg (Config): the run's config.
        loaders (tuple[str]): dataloader keys, :data:`TRAIN_LOADERS` or :data:`TEST_LOADERS`.

    Raises:
        UserError: naming the path, the config key that set it and where to get the data.
    """
    for loader in built_dataloaders(cfg, loaders):
        for key, dataset in leaf_datasets(cfg[loader].get('dataset'), f'{loader}.dataset'):
            data_root = dataset.get('data_root') or ''
            if _is_remote(data_root, dataset):
                continue
            if data_root and not osp.isdir(data_root):
                raise UserError(f'data root {data_root} does not exist (set by {key}.data_root); '
                                f'{_help_for(data_root)}')
            ann_file = dataset.get('ann_file') or ''
            if ann_file:
                path = ann_file if osp.isabs(ann_file) else osp.join(data_root, ann_file)
                if not osp.isfile(path):
                    source = f'{key}.ann_file' + (f' under {key}.data_root' if path != ann_file else '')
                    raise UserError(f'annotation file {path} does not exist (set by {source}); {_help_for(path)}')
            prefixes = dataset.get('data_prefix') or {}
            if isinstance(prefixes, str):  # mmpretrain accepts a plain folder
                prefixes = {'': prefixes}
            for name, prefix in prefixes.items():
                if not isinstance(prefix, str) or not prefix:
                    continue
                path = prefix if osp.isabs(prefix) else osp.join(data_root, prefix)
                if not osp.isdir(path):
                    prefix_key = f'{key}.data_prefix' + (f'.{name}' if name else '')
                    raise UserError(f'data folder {path} does not exist (set by {prefix_key}'
                                    f'{f" under {key}.data_root" if path != prefix else ""}); {_help_for(path)}')
        # CocoMetric and friends read the ground truth themselves
        evaluator_key = loader.replace('_dataloader', '_evaluator')
        evaluators = cfg.get(evaluator_key) if loader != 'train_dataloader' else None
        evaluators = evaluators if isinstance(evaluators, (list, tuple)) else [evaluators]
        for index, evaluator in enumerate(evaluators):
            ann_file = evaluator.get('ann_file') if isinstance(evaluator, dict) else None
            if ann_file and '://' not in ann_file and not osp.isfile(ann_file):
                key = evaluator_key + (f'.{index}' if len(evaluators) > 1 else '')
                raise UserError(f'annotation file {ann_file} does not exist (set by {key}.ann_file); '
                                f'{_help_for(ann_file)}')


def _dataset_classes(dataset, scope):
    """The class names a dataset config will have: its ``metainfo`` ones, else its class's ``METAINFO``."""
    metainfo = dataset.get('metainfo') or {}
    if metainfo.get('classes'):
        return tuple(metainfo['classes']), 'metainfo.classes'
    with DefaultScope.overwrite_default_scope(scope):
        with DATASETS.switch_scope_and_registry(scope) as registry:
            dataset_class = registry.get(dataset.get('type')) if isinstance(dataset.get('type'), str) else None
    classes = getattr(dataset_class, 'METAINFO', {}).get('classes')
    return (tuple(classes), f'the classes of {dataset_class.__name__}') if classes else (None, None)


def head_class_counts(model, key='model'):
    """Yield ``(config key, num_classes)`` of every head in a model config (lists of heads included)."""
    if isinstance(model, dict):
        for name, value in model.items():
            # the RPN's single objectness class and mmpretrain's one-hot size are not dataset classes
            not_a_head = key.endswith(('rpn_head', 'data_preprocessor'))
            if name == 'num_classes' and isinstance(value, int) and not not_a_head:
                yield f'{key}.num_classes', value
            elif name not in ('train_cfg', 'test_cfg', 'init_cfg'):
                yield from head_class_counts(value, f'{key}.{name}')
    elif isinstance(model, (list, tuple)):
        for index, value in enumerate(model):
            yield from head_class_counts(value, f'{key}.{index}')


def check_class_counts(cfg, loaders):
    """Refuse a run whose model heads predict another number of classes than its datasets name.

    Also refuses a ``metainfo.palette`` with neither one colour per class nor one per class of the dataset
    type (mmseg fails on it with an IndexError in ``_update_palette``; mmdet draws with the wrong colours).

    Raises:
        UserError: naming both config keys and both numbers.
    """
    counts = list(head_class_counts(cfg.get('model')))
    scope = cfg.get('default_scope')
    for loader in built_dataloaders(cfg, loaders):
        for key, dataset in leaf_datasets(cfg[loader].get('dataset'), f'{loader}.dataset'):
            classes, source = _dataset_classes(dataset, scope)
            if classes is None:
                continue
            palette = (dataset.get('metainfo') or {}).get('palette')
            # mmseg indexes a palette by the dataset's original class ids when metainfo picks a subset of them:
            # a palette must then cover all of them, otherwise one colour per class.
            full = _dataset_classes({'type': dataset.get('type')}, scope)[0] or ()
            if palette and len(palette) not in (len(classes), len(full)):
                raise UserError(f'{key}.metainfo.palette has {len(palette)} colours for {len(classes)} classes; '
                                'give one colour per class (or no palette)')
            for head_key, num_classes in counts:
                if num_classes != len(classes):
                    raise UserError(
                        f'{head_key}={num_classes} but {key} has {len(classes)} classes ({source}: '
                        f'{", ".join(classes[:5])}{", ..." if len(classes) > 5 else ""}); make them agree')


def _frames_innermost_first(err):
    return [frame for frame, _ in reversed(list(traceback.walk_tb(err.__traceback__)))]


def _file_in_frames(err):
    """The innermost local variable of the traceback naming an existing file (a path or an open file)."""
    for frame in _frames_innermost_first(err):
        for value in frame.f_locals.values():
            path = getattr(value, 'name', value)
            if isinstance(path, str) and 0 < len(path) < 4096 and '\0' not in path and osp.isfile(path):
                return path
    return None


def _sample_files(err):
    """Files of the sample a dataset was preparing when ``err`` was raised (main-process data loading)."""
    for frame in _frames_innermost_first(err):
        dataset, index = frame.f_locals.get('self'), frame.f_locals.get('idx')
        if frame.f_code.co_name == 'prepare_data' and hasattr(dataset, 'get_data_info') and index is not None:
            info = dataset.get_data_info(index)
            return [info[key] for key in ('img_path', 'seg_map_path') if isinstance(info.get(key), str)]
    return []


def _undecodable(path):
    import mmcv
    try:
        return mmcv.imread(path, flag='unchanged') is None
    except Exception:  # OpenCV raises on an empty buffer instead of returning None
        return True


# What mmcv's LoadImageFromFile raises for a file OpenCV cannot decode (the name is in the first message).
IMAGE_FAILURE = re.compile(r"failed to load image: (\S.*?)\s*$|!buf\.empty\(\)", re.MULTILINE)


def describe_data_error(err):
    """One line saying which data file is broken, when ``err`` comes from reading a malformed annotation file
    or an undecodable image; None for any other error.

    Datasets load their annotations in the main process, where the traceback names the file. Images are
    decoded in DataLoader workers too, whose errors reach the main process as text: there the name comes from
    mmcv's message.
    """
    if isinstance(err, json.JSONDecodeError):
        path = _file_in_frames(err)
        return (f'annotation file {path or "(unknown)"} is not valid JSON ({err.msg}: line {err.lineno} column '
                f'{err.colno}); repair or re-create it')
    if isinstance(err, ET.ParseError):
        path = _file_in_frames(err)
        return f'annotation file {path or "(unknown)"} is not valid XML ({err}); repair or re-create it'
    # In the main process, any failure while preparing a sample with an undecodable file is that file's fault
    # (mmseg's LoadAnnotations, for one, fails on it with "'NoneType' object has no attribute 'squeeze'").
    broken = [path for path in _sample_files(err) if _undecodable(path)]
    # a worker's message quotes its traceback, source lines included: the raised message comes last
    matches = list(IMAGE_FAILURE.finditer(str(err)))
    match = matches[-1] if matches else None
    if not broken and match is not None and match.group(1):
        broken = [match.group(1)]
    if broken:
        return (f'image {broken[0]} cannot be decoded (not an image, empty or corrupt); replace it or remove it '
                'from the dataset')
    if match is not None:
        return ('an image of the dataset cannot be decoded (a data loading worker failed with: '
                f'{str(err).strip().splitlines()[-1]}); run with --cfg-options <dataloader>.num_workers=0 to have '
                'the file named')
    return None


@contextmanager
def data_errors_named():
    """Re-raise an error that :func:`describe_data_error` recognises as a :class:`UserError` with its line."""
    try:
        yield
    except Exception as err:
        message = describe_data_error(err)
        if message is None:
            raise
        raise UserError(message) from None

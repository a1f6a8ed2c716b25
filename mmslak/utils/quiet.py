"""A quiet console: no warnings on a normal run that the user can do nothing about.

* setuptools >= 81 warns on every ``import pkg_resources``; mmengine imports it (and reloads it, which warns
  again) whenever a config names a base as ``mmdet::``, ``mmseg::`` or ``mmpretrain::``.
* mmseg's decode heads call mmseg's own deprecated ``build_loss``, and its visualization hook warns that it
  draws nothing when drawing is off, as it is by default (``tools/test.py --show-dir`` turns it on).
* MMEngine's checkpoint saving creates a deprecated ``FileClient`` for the local disk and logs two
  deprecation warnings about it in every training run.
* Building an OpenMMLab inferencer (``DetInferencer``, ``MMSegInferencer``, ``ImageClassificationInferencer``)
  from a script logs mmengine's scope warnings: it switches the default scope to its task's when another is
  current, and builds its collate function through a task registry that has none. It also builds the
  config's visualizer, which warns that its local backend has no ``save_dir`` (an inferencer saves nothing
  through it).

:func:`ignore_stack_warnings`, :func:`quiet_runner_logger` and :func:`build_inferencer` filter exactly these
messages. Warnings about the user's own config or data still show.
"""
import logging
import warnings
from contextlib import contextmanager

# Python warnings raised inside the pinned stack (setuptools<82, mmseg 1.2.2), by message start.
STACK_WARNINGS = (r'pkg_resources is deprecated as an API', r'``build_loss`` would be deprecated soon',
                  r'The draw is False, it means that the hook for visualization will not take effect')
# What MMEngine logs when its checkpoint code creates a FileClient for the local disk.
FILE_CLIENT_WARNINGS = ('"FileClient" will be deprecated in future', '"HardDiskBackend" is the alias of')
# What mmengine logs while an inferencer sets up its scope (mmengine/registry/{utils,registry}.py).
SCOPE_WARNINGS = ('The current default scope', 'Failed to search registry with scope')
# The inferencers build the config's visualizer, whose LocalVisBackend has no save_dir outside a Runner.
VISUALIZER_BACKEND_WARNING = r"Failed to add <class 'mmengine\.visualization\.vis_backend\.LocalVisBackend'>"


def ignore_stack_warnings():
    """Filter the Python warnings of :data:`STACK_WARNINGS` for the rest of the process. Idempotent."""
    for message in STACK_WARNINGS:
        warnings.filterwarnings('ignore', message=message, category=UserWarning)


class DropMessages(logging.Filter):
    """A logging filter that drops the records whose message starts with one of ``prefixes``."""

    def __init__(self, prefixes):
        super().__init__()
        self.prefixes = tuple(prefixes)

    def filter(self, record):
        return not record.getMessage().startswith(self.prefixes)


def quiet_runner_logger(logger):
    """Drop MMEngine's FileClient deprecation warnings (:data:`FILE_CLIENT_WARNINGS`) from a Runner's logger."""
    logger.addFilter(DropMessages(FILE_CLIENT_WARNINGS))


@contextmanager
def scope_warnings_silenced():
    """Drop mmengine's default-scope warnings from the current MMLogger while the block runs."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    scope_filter = DropMessages(SCOPE_WARNINGS)
    logger.addFilter(scope_filter)
    try:
        yield
    finally:
        logger.removeFilter(scope_filter)


def build_inferencer(inferencer_class, *args, **kwargs):
    """Build ``inferencer_class(*args, **kwargs)`` (an OpenMMLab inferencer) without the stack's warnings.

    Calls :func:`ignore_stack_warnings`, and silences mmengine's scope warnings and the visualizer's missing
    ``save_dir`` while the inferencer is built. Warnings that concern the call (no weights given, say) stay.

    Example:
        >>> from mmseg.apis import MMSegInferencer
        >>> inferencer = build_inferencer(MMSegInferencer, model=config_file, weights=checkpoint, device='cpu')
    """
    ignore_stack_warnings()
    with scope_warnings_silenced(), warnings.catch_warnings():
        warnings.filterwarnings('ignore', message=VISUALIZER_BACKEND_WARNING, category=UserWarning)
        return inferencer_class(*args, **kwargs)

"""Checkpoints that survive kills and full disks: atomic writes, and resume from the newest intact file.

MMEngine writes a checkpoint by opening its final name and writing into it, so a process killed mid-save (or a
disk that fills up) leaves a truncated ``iter_N.pth`` under the name ``--resume`` picks, and torch's zip reader
then fails ("failed finding central directory"). :func:`install_atomic_local_writes` makes every local write
through MMEngine's file backends (checkpoints, dumped results) go to a temporary file in the same directory,
which is flushed to disk and renamed over the final name: the final name holds either the old or the new
complete file. ``CheckpointHook`` writes ``last_checkpoint`` only after that rename. In distributed runs only
rank 0 saves (``Runner.save_checkpoint`` is ``master_only``); the temporary name is unique per call, so
concurrent writers never share one.

:func:`find_resumable_checkpoint` picks what ``--resume`` resumes from: the newest checkpoint that can be
read, skipping (and naming) broken ones. :func:`checkpoint_mismatch` tells whether a checkpoint was written by
the same architecture as a model, before anything of a run is overwritten.
"""
import os
import os.path as osp
import re
import tempfile

from mmengine.fileio.backends import LocalBackend, register_backend

from mmslak.utils.safe_checkpoint import safe_torch_load

__all__ = ['AtomicLocalBackend', 'CheckpointReadError', 'atomic_write_bytes', 'checkpoint_mismatch',
           'find_resumable_checkpoint', 'install_atomic_local_writes', 'read_checkpoint',
           'remove_interrupted_writes']

TEMP_SUFFIX = '.partial'
# The names CheckpointHook gives regular checkpoints with its default filename_tmpl ('iter_{}.pth' or
# 'epoch_{}.pth'); best_*.pth files are evaluation snapshots, not resume points.
CHECKPOINT_NAME = re.compile(r'^(?:iter|epoch)_(\d+)\.pth$')
# Read once at import (single-threaded) so that renamed files get the permissions a plain open() would give.
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(data, filepath):
    """Write ``data`` to ``filepath`` so that the name never refers to a partly written file.

    The bytes go to a hidden temporary file in the same directory (``.NAME.XXXX.partial``), are flushed and
    fsync'ed, and the file is renamed over ``filepath`` (atomic on POSIX file systems, NFS included). A kill
    at any moment leaves either the previous file or the complete new one; at worst a stray temporary file,
    which :func:`remove_interrupted_writes` deletes.
    """
    filepath = osp.abspath(str(filepath))
    directory = osp.dirname(filepath)
    os.makedirs(directory, exist_ok=True)
    fd, temp_path = tempfile.mkstemp(prefix=f'.{osp.basename(filepath)}.', suffix=TEMP_SUFFIX, dir=directory)
    try:
        with os.fdopen(fd, 'wb') as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp_path, 0o666 & ~_UMASK)
        os.replace(temp_path, filepath)
    except BaseException:
        if osp.exists(temp_path):
            os.remove(temp_path)
        raise
    # Make the rename itself durable (the directory entry), so a power loss cannot undo it.
    if hasattr(os, 'O_DIRECTORY'):
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class AtomicLocalBackend(LocalBackend):
    """MMEngine's local file backend whose ``put`` and ``put_text`` are atomic (:func:`atomic_write_bytes`)."""

    def put(self, obj, filepath):
        atomic_write_bytes(obj, filepath)

    def put_text(self, obj, filepath, encoding='utf-8'):
        atomic_write_bytes(obj.encode(encoding), filepath)


def install_atomic_local_writes():
    """Make :class:`AtomicLocalBackend` MMEngine's backend for local paths (idempotent).

    Backends that MMEngine cached before this call keep the plain writer, which is why ``import mmslak``
    (via :mod:`mmslak.engine`) calls it before any Runner exists.
    """
    register_backend('local', AtomicLocalBackend, force=True, prefixes='')


class CheckpointReadError(Exception):
    """A checkpoint file that cannot be read or is not an MMEngine training checkpoint."""


def read_checkpoint(path):
    """Open ``path`` as an MMEngine checkpoint without reading its tensor data.

    The file is memory-mapped, so this reads the zip directory and the pickled structure (the whole file for
    old, non-zip checkpoints): it finds truncated and overwritten files in milliseconds whatever their size.

    Returns:
        dict: the checkpoint; its tensors are backed by the mapped file.

    Raises:
        CheckpointReadError: the file cannot be read, or holds no ``state_dict`` and ``meta``; the message
            says why in one line.
    """
    try:
        try:
            checkpoint = safe_torch_load(path, map_location='cpu', mmap=True)
        except RuntimeError as err:
            if 'mmap can only be used with files saved with' not in str(err):
                raise
            checkpoint = safe_torch_load(path, map_location='cpu')
    except Exception as err:  # any failure to read is the file's fault here: truncated, overwritten, foreign
        reason = ' '.join(str(err).split()) or type(err).__name__
        if osp.isfile(path) and osp.getsize(path) == 0:
            reason = 'the file is empty'
        raise CheckpointReadError(reason) from None
    if not isinstance(checkpoint, dict) or 'state_dict' not in checkpoint or 'meta' not in checkpoint:
        raise CheckpointReadError('not a training checkpoint (it has no "state_dict" and "meta" entries)')
    return checkpoint


def _candidate_checkpoints(work_dir):
    """Regular checkpoints of a work dir, newest (highest iteration or epoch) first.

    ``last_checkpoint`` may name a file in another directory (``CheckpointHook(out_dir=...)``); that
    directory is searched too.
    """
    directories = [work_dir]
    named = None
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as file:
            named = file.read().strip() or None
        if named and '://' not in named and osp.dirname(named):
            directories.append(osp.dirname(named))
    found = {}
    for directory in directories:
        if not osp.isdir(directory):
            continue
        for name in os.listdir(directory):
            match = CHECKPOINT_NAME.match(name)
            if match:
                path = osp.join(directory, name)
                found.setdefault(osp.realpath(path), (int(match.group(1)), path))
    # A file named by another filename_tmpl: last_checkpoint vouches that it is the newest.
    if named and '://' not in named and osp.isfile(named) and not CHECKPOINT_NAME.match(osp.basename(named)):
        found.setdefault(osp.realpath(named), (float('inf'), named))
    return [path for _, path in sorted(found.values(), key=lambda item: item[0], reverse=True)]


def find_resumable_checkpoint(work_dir):
    """The newest checkpoint of ``work_dir`` that can be read, and the newer ones that cannot.

    Returns:
        tuple[str | None, list[tuple[str, str]]]: the checkpoint to resume from (None if the work dir has no
        readable checkpoint) and ``(path, reason)`` of every newer one that was skipped.
    """
    skipped = []
    for path in _candidate_checkpoints(work_dir):
        try:
            read_checkpoint(path)
        except CheckpointReadError as err:
            skipped.append((path, str(err)))
            continue
        return path, skipped
    return None, skipped


def remove_interrupted_writes(directory):
    """Delete the temporary files that interrupted :func:`atomic_write_bytes` calls left in ``directory``.

    Returns:
        list[str]: the removed paths.
    """
    removed = []
    if not osp.isdir(directory):
        return removed
    for name in os.listdir(directory):
        if name.startswith('.') and name.endswith(TEMP_SUFFIX):
            path = osp.join(directory, name)
            os.remove(path)
            removed.append(path)
    return removed


def checkpoint_mismatch(model, state_dict, limit=3):
    """Describe how ``state_dict`` fails to fit ``model`` exactly, or return None when it fits.

    Compares names and shapes only (``model`` may live on the ``meta`` device), so it catches a checkpoint
    of another architecture before a run loads it non-strictly.

    Args:
        model (torch.nn.Module): the model of the run.
        state_dict (dict): the checkpoint's ``state_dict``.
        limit (int): how many names of each kind of difference the description lists.

    Returns:
        str | None: e.g. ``'2 weights differ in shape (backbone.stem.0.weight: checkpoint [8, 3, 4, 4], model
        [16, 3, 4, 4]; ...)'``.
    """
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    found = {name: tuple(tensor.shape) for name, tensor in state_dict.items() if hasattr(tensor, 'shape')}
    missing = [name for name in expected if name not in found]
    unexpected = [name for name in found if name not in expected]
    reshaped = [name for name in expected if name in found and expected[name] != found[name]]

    def listing(names, describe=str):
        shown = '; '.join(describe(name) for name in names[:limit])
        return shown + ('; ...' if len(names) > limit else '')

    parts = []
    if reshaped:
        parts.append(f'{len(reshaped)} weights differ in shape (' + listing(
            reshaped, lambda name: f'{name}: checkpoint {list(found[name])}, model {list(expected[name])}') + ')')
    if missing:
        parts.append(f'{len(missing)} model weights are not in the checkpoint ({listing(missing)})')
    if unexpected:
        parts.append(f'{len(unexpected)} checkpoint weights are not in the model ({listing(unexpected)})')
    return ', '.join(parts) or None

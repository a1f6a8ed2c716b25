"""Checkpoints load under torch >= 2.6 with weights_only=True; anything outside the allow-list is refused."""
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader, load_checkpoint

import mmslak  # noqa: F401
from mmslak.utils.safe_checkpoint import UnsafeCheckpointError


def write_marker(path):
    with open(path, 'w') as f:
        f.write('code ran')


class RunsCodeWhenUnpickled:

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (write_marker, (self.marker, ))


def mmengine_like_checkpoint():
    """What mmengine's Runner saves: numpy values and HistoryBuffers in the message hub, tensors elsewhere."""
    import numpy as np
    buffer = HistoryBuffer()
    buffer.update(0.5)
    buffer.update(0.25)
    return dict(
        meta=dict(iter=2, seed=np.int64(3), cfg='model = dict()'),
        state_dict={'w': torch.ones(2)},
        message_hub=dict(log_scalars={'train/loss': buffer},
                         runtime_info={'lr': np.float64(0.1), 'hist': np.arange(3)}),
        optimizer={'state': {}, 'param_groups': []})


def test_mmengine_checkpoint_round_trips(tmp_path):
    path = tmp_path / 'ckpt.pth'
    torch.save(mmengine_like_checkpoint(), path)
    loaded = CheckpointLoader.load_checkpoint(str(path))
    assert int(loaded['meta']['seed']) == 3
    assert loaded['message_hub']['log_scalars']['train/loss'].mean() == pytest.approx(0.375)
    assert loaded['message_hub']['runtime_info']['hist'].tolist() == [0, 1, 2]
    # torch.load itself (weights_only by default on torch >= 2.6) accepts it too, as mmengine's resume calls it.
    assert torch.equal(torch.load(path)['state_dict']['w'], torch.ones(2))


def test_arbitrary_object_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / 'marker'
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'payload': RunsCodeWhenUnpickled(str(marker))}, path)
    with pytest.raises(UnsafeCheckpointError, match=r'Refusing to load checkpoint .*write_marker'):
        load_checkpoint(torch.nn.Linear(1, 1), str(path))
    assert not marker.exists()


class GetattrOnHistoryBuffer:

    def __init__(self, name):
        self.name = name

    def __reduce__(self):
        return (getattr, (HistoryBuffer, self.name))


def test_getattr_is_allowed_only_for_history_buffer_statistics(tmp_path):
    allowed, refused = tmp_path / 'mean.pth', tmp_path / 'init.pth'
    torch.save({'payload': GetattrOnHistoryBuffer('mean')}, allowed)
    torch.save({'payload': GetattrOnHistoryBuffer('__init__')}, refused)
    assert CheckpointLoader.load_checkpoint(str(allowed))['payload'] is HistoryBuffer.mean
    with pytest.raises(UnsafeCheckpointError, match=r'getattr\(.*HistoryBuffer.*__init__'):
        CheckpointLoader.load_checkpoint(str(refused))


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nothing.pth'):
        CheckpointLoader.load_checkpoint(str(tmp_path / 'nothing.pth'))

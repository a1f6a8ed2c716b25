"""Convert an official SLaK checkpoint into an mmengine checkpoint for mmslak.

Usage: python tools/model_converters/slak2mmslak.py SRC DST [--ema]

SRC is an official classification checkpoint (``model``, optionally ``model_ema``, ``args``, ...), an
official downstream one (``state_dict`` with ``backbone.`` keys; necks and task heads are dropped), or
one with the old ``Decom1``/``Decom2`` names. DST loads strictly into the classifiers of
``configs/slak/`` (same architecture), and its ``backbone.`` part into detection and segmentation
backbones through ``init_cfg=dict(type='Pretrained', checkpoint=DST, prefix='backbone.')``.
"""
import argparse
import pickle
import os
import sys

import torch

from mmslak import __version__
from mmslak.models import check_slak_state_dict, slak_state_dict_from_checkpoint


def load_source(path):
    """Load with ``weights_only=True``; official files also pickle their ``argparse.Namespace``."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location='cpu', weights_only=True)


def convert(src, dst, ema=False):
    """Convert ``src`` to ``dst``; returns the inferred SLaK configuration."""
    state_dict, dropped = slak_state_dict_from_checkpoint(load_source(src), ema=ema)
    config = check_slak_state_dict(state_dict)
    meta = dict(
        converted_from=os.path.basename(src),
        weights='model_ema' if ema else 'model',
        slak_config=config,
        mmslak_version=__version__)
    torch.save(dict(meta=meta, state_dict=state_dict), dst)
    if dropped:
        print(f'dropped {len(dropped)} keys outside the backbone (necks, task heads)')
    return config


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='official SLaK checkpoint')
    parser.add_argument('dst', help='output mmengine checkpoint')
    parser.add_argument('--ema', action='store_true', help='convert model_ema instead of model')
    args = parser.parse_args(argv)
    try:
        config = convert(args.src, args.dst, ema=args.ema)
    except (ValueError, OSError, pickle.UnpicklingError) as error:
        sys.exit(f'slak2mmslak: {args.src}: {error}')
    print(f'saved {args.dst}: SLaK {config}')


if __name__ == '__main__':
    main()

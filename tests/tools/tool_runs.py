"""What the tool tests share: running a tool as a user does, and a small image-folder dataset."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
# A classifier that trains a few iterations in seconds on 2 CPU cores (mmpretrain's CustomDataset).
TINY_CLASSIFIER = ROOT / 'tests/data/configs/tiny_slak_classifier.py'


def run(*args, cwd=ROOT, env=None):
    """Run ``python ARGS...`` (a tool and its arguments) and capture its output."""
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


def write_image_folder(root, broken=None):
    """Two classes of 32x32 images under ``root``, dark and bright, one folder each; ``broken`` bytes (if
    given) are written as one more image, ``dark/broken.png``."""
    rng = np.random.default_rng(0)
    for label, base in (('dark', 40), ('bright', 200)):
        (root / label).mkdir(parents=True)
        for i in range(8):
            pixels = np.clip(base + rng.normal(0, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f'{i}.png')
    if broken is not None:
        (root / 'dark' / 'broken.png').write_bytes(broken)
    return root

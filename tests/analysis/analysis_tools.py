"""Import the scripts of tools/analysis/ in tests the way ``python tools/analysis/NAME.py`` sees them."""
import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / 'tools' / 'analysis'
# Scripts that import a sibling script by name (the script's folder is on sys.path when it runs).
SIBLINGS = {'visualize_kernels': ('visualize_erf', )}


def load_tool(name):
    """``tools/analysis/<name>.py`` as the top-level module ``name`` (its siblings loaded first)."""
    if name in sys.modules:
        return sys.modules[name]
    for sibling in SIBLINGS.get(name, ()):
        load_tool(sibling)
    spec = importlib.util.spec_from_file_location(name, TOOLS / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module
    return module


def tiny_slak_config(path, **backbone):
    """Write a config of a small SLaK backbone (four stages of one block, widths 8-32) to ``path``."""
    options = dict(arch=dict(depths=[1, 1, 1, 1], widths=[8, 16, 24, 32]), kernel_size=(9, 7, 7, 5),
                   short_kernel=3, width_factor=1.0)
    options.update(backbone)
    options.setdefault('type', 'mmslak.SLaK')
    path.write_text("custom_imports = dict(imports=['mmslak'], allow_failed_imports=False)\n"
                    f'model = {options!r}\n')
    return str(path)

"""model-index.yml and the family metafiles: complete entries, existing configs, sizes that get_flops.py agrees with.

Each Results number is also checked against the result the config's own header comment quotes (where
it quotes one), and every paper config of configs/slak and configs/pelk must have an entry.
"""
import importlib.util
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INDEX = REPO / 'model-index.yml'
FAMILIES = ('slak', 'pelk')
SHAPE = re.compile(r'^1x3x(\d+)x(\d+)$')


def metafiles():
    return [REPO / path for path in yaml.safe_load(INDEX.read_text())['Import']]


def collections_and_models():
    collections, models = [], []
    for path in metafiles():
        meta = yaml.safe_load(path.read_text())
        collections += meta['Collections']
        models += meta['Models']
    return collections, models


MODELS = collections_and_models()[1]


def header_comment(config):
    lines = []
    for line in (REPO / config).read_text().splitlines():
        if not line.startswith('#'):
            break
        lines.append(line)
    return '\n'.join(lines)


def test_index_imports_one_metafile_per_family():
    assert sorted(path.relative_to(REPO).as_posix() for path in metafiles()) == sorted(
        f'configs/{family}/metafile.yml' for family in FAMILIES)
    assert all(path.is_file() for path in metafiles())


def test_every_paper_config_has_one_entry():
    configs = sorted(model['Config'] for model in MODELS)
    assert len(configs) == len(set(configs))
    on_disk = sorted(path.relative_to(REPO).as_posix() for family in FAMILIES
                     for path in (REPO / 'configs' / family).glob('*.py'))
    assert configs == on_disk


@pytest.mark.parametrize('model', MODELS, ids=[model['Name'] for model in MODELS])
def test_entry_is_complete_and_matches_its_config(model):
    collection_names = {collection['Name'] for collection in collections_and_models()[0]}
    assert model['In Collection'] in collection_names
    config = model['Config']
    assert (REPO / config).is_file(), f'{config} does not exist'
    assert model['Name'] == Path(config).stem
    meta = model['Metadata']
    assert isinstance(meta['FLOPs'], int) and meta['FLOPs'] > 0
    assert isinstance(meta['Parameters'], int) and meta['Parameters'] > 0
    assert meta['Training Data'] and SHAPE.match(meta['FLOPs Input Shape'])
    header = header_comment(config)
    quoted = set(re.findall(r'\d+\.\d', header)) if 'Reported in' in header else None
    for result in model.get('Results', []):
        assert {'Task', 'Dataset', 'Metrics'} <= set(result)
        assert 'paper' in result['Reported In'], 'Results are the papers\' numbers and say so'
        for metric, value in result['Metrics'].items():
            # where the config's header quotes the paper's result, it is the same number
            assert quoted is None or f'{value:.1f}' in quoted, f'{metric} {value} differs from {config}'
    source = model.get('Converted From')
    if source:
        assert source['Weights'].startswith('https://')
        assert (REPO / source['Converter']).is_file()


def test_modelindex_reads_every_entry():
    modelindex = pytest.importorskip('modelindex')
    index = modelindex.load(str(INDEX))
    assert sorted(model.name for model in index.models) == sorted(model['Name'] for model in MODELS)
    assert {model.config for model in index.models} == {model['Config'] for model in MODELS}


def test_openmim_reads_the_index():
    search = pytest.importorskip('mim.commands.search')
    from modelindex import load
    table = search.convert2df(load(str(INDEX)))
    assert sorted(table.index) == sorted(model['Name'].lower() for model in MODELS)
    assert table.loc['slak-tiny_in1k', 'imagenet-1k/top_1_accuracy'] == 82.5
    assert table.loc['upernet_pelk-t_4xb4-160k_ade20k-512x512', 'ade20k/miou'] == 48.1
    assert table.loc['cascade-mask-rcnn_pelk-t_fpn_giou-4conv1f_ms-3x_coco', 'coco/mask_ap'] == 44.6


def load_get_flops():
    spec = importlib.util.spec_from_file_location('get_flops', REPO / 'tools' / 'analysis' / 'get_flops.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize('model', MODELS, ids=[model['Name'] for model in MODELS])
def test_sizes_match_get_flops(model):
    get_flops = load_get_flops()
    cfg, network = get_flops.build_model(str(REPO / model['Config']))
    setting = get_flops.sparse_setting(cfg)
    fractions = get_flops.uniform_sparsity_fractions(network, *setting) if setting else {}
    height, width = map(int, SHAPE.match(model['Metadata']['FLOPs Input Shape']).groups())
    counts = get_flops.count_complexity(network, (1, 3, height, width), fractions)
    for key, count in (('FLOPs', counts['flops_nonzero']), ('Parameters', counts['params_nonzero'])):
        recorded = model['Metadata'][key]
        assert abs(recorded - count) <= 0.05 * count, f'{key}: metafile {recorded}, get_flops.py {count}'

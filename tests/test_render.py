"""results/render.py: the documents' figures are what their results files give, and a changed file is caught."""
import json
import shutil
import sys

from helpers import ROOT, run

sys.path.insert(0, str(ROOT / 'results'))
import render  # noqa: E402


def test_documents_are_rendered_from_their_files():
    p = run('results/render.py', '--check', check=False)
    assert p.returncode == 0, p.stderr


def test_a_changed_figure_in_a_results_file_fails_the_check(tmp_path):
    """The check can fail: one number changed in a copy of lm.json makes --check name the block and the figure."""
    shutil.copytree(ROOT / 'results', tmp_path / 'results', ignore=shutil.ignore_patterns('*.png', '__pycache__'))
    shutil.copy(ROOT / 'README.md', tmp_path / 'README.md')
    assert render.main(['--check', '--root', str(tmp_path)]) == 0
    path = tmp_path / 'results' / 'compare' / 'lm.json'
    report = json.loads(path.read_text())
    report['summary']['gpt']['val_ppl']['mean'] = 19.0       # a drifted figure
    path.write_text(json.dumps(report))
    p = run('results/render.py', '--check', '--root', str(tmp_path), check=False)
    assert p.returncode == 1
    assert "stale: README.md: block compare-answers:" in p.stderr and "stale: README.md: block compare-lm:" in p.stderr
    assert '19.00' in p.stderr                                # the figure the file now gives
    assert render.main(['--root', str(tmp_path)]) == 0        # rewriting the blocks makes the documents current
    assert render.main(['--check', '--root', str(tmp_path)]) == 0
    assert '| 19.00 ± 0.02 |' in (tmp_path / 'README.md').read_text()


def test_machine_text_names_cpu_flags_or_gpu():
    assert render.machine_text({'cpu': 'Intel Xeon', 'cpu_count': 2, 'avx512_bf16': True, 'amx_bf16': False}) == \
        'Intel Xeon, 2 cores, avx512_bf16, no AMX'
    assert render.machine_text({'device_name': 'NVIDIA H100 80GB HBM3'}) == 'NVIDIA H100 80GB HBM3'
    assert render.machine_text(None) == 'machine not recorded'

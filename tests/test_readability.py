"""The book reads as it should: every public definition is named in some notebook's test cell (so it is shown working
and checked), and library lines stay within 120 characters (the few nbdev writes itself aside, at most 1%)."""
import json, re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = [p for p in sorted((ROOT/'text2img_diffusion').glob('*.py')) if not p.stem.startswith('_')]

def cell_sources() -> str:
    "The source of every code cell that exports nothing: the notebooks' tests and examples"
    out = []
    for nb in sorted((ROOT/'nbs').glob('*.ipynb')):
        for c in json.loads(nb.read_text())['cells']:
            s = ''.join(c['source'])
            if c['cell_type'] == 'code' and not re.search(r'^#\s*\|\s*export', s, re.M): out.append(s)
    return '\n'.join(out)

def test_public_definitions_are_named_in_test_cells():
    tests, names = cell_sources(), []
    for p in MODULES:
        m = re.search(r"__all__ = \[(.*?)\]", p.read_text(), re.S)
        names += [(p.stem, n) for n in re.findall(r"'(\w+)'", m.group(1))] if m else []
    untested = [f'{m}.{n}' for m, n in names if not re.search(rf'\b{n}\b', tests)]
    assert len(untested) <= 0.05 * len(names), f"{len(untested)} of {len(names)} never named in a test cell: {untested}"

def test_library_lines_within_120_characters():
    lines = [l for p in MODULES for l in p.read_text().splitlines()]
    long = [l[:60] for l in lines if len(l) > 120]
    assert len(long) <= 0.01 * len(lines), f"{len(long)} of {len(lines)} lines over 120 characters: {long[:5]}"

"""Write README.md from nbs/index.ipynb (markdown cells as they are, code cells as python blocks, cells marked
`#| hide` left out). Quarto, which nbdev_readme needs, is not available everywhere, so this keeps the two in step.
usage: python .ci/readme.py [--check]   (--check: exit 1 if README.md differs from what it would write)"""
import json, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
nb = json.loads((root/'nbs'/'index.ipynb').read_text())
parts = []
for c in nb['cells']:
    src = ''.join(c['source']).strip()
    if not src or any(l.strip() in ('#| hide', '#|hide') for l in src.splitlines()): continue
    if c['cell_type'] == 'markdown': parts.append(src)
    elif c['cell_type'] == 'code':
        code = '\n'.join(l for l in src.splitlines() if not l.startswith('#|'))
        parts.append(f'```python\n{code}\n```')
text = '<!-- generated from nbs/index.ipynb by .ci/readme.py: edit the notebook, not this file -->\n\n' + '\n\n'.join(parts) + '\n'
readme = root/'README.md'
if '--check' in sys.argv:
    if not readme.exists() or readme.read_text() != text:
        sys.exit('README.md is out of date with nbs/index.ipynb: run python .ci/readme.py')
    print('README.md matches nbs/index.ipynb')
else:
    readme.write_text(text)
    print(f'wrote {readme}')

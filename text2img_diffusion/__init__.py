__version__ = "0.0.1"

import warnings as _warnings
# fastai 2.8.7 (pinned: newer fastai needs fastcore 2, which nbdev 2 cannot import) scripts a few layers with
# torch.jit.script at import time, which torch 2.14 deprecates. Silence exactly that message, nothing else.
_warnings.filterwarnings('ignore', message=r'`torch\.jit\.script` is deprecated', category=FutureWarning)

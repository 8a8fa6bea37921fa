"""Old path of :mod:`toolkit.estimands.mrd` (kept so that existing imports work).

The old name is the same module object, not a copy of its names, so that
``import toolkit.mrd_estimands`` and a test's monkeypatch of it act on the
functions that run.
"""

import sys

from toolkit.estimands import mrd as _module

sys.modules[__name__] = _module

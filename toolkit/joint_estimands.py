"""Old path of :mod:`toolkit.estimands.joint` (kept so that existing imports work).

The old name is the same module object, not a copy of its names, so that
``import toolkit.joint_estimands`` and a test's monkeypatch of it act on the
functions that run.
"""

import sys

from toolkit.estimands import joint as _module

sys.modules[__name__] = _module

"""Fixtures of the native-helper suite: one ``impl`` parameter per backend, guarded buffers.

``impl`` is ``mqstore._purepy`` (the reference) or ``mqstore.native`` with the compiled
module loaded; the native case is skipped, with the reason, when it is not (module not
built, or ``MQSTORE_NATIVE=off``). ``guarded(data)`` returns a memoryview whose last byte
sits right before a PROT_NONE page, so a C read past the buffer crashes the test run instead
of passing silently.
"""
from __future__ import annotations

import pytest
from nativelogs import NATIVE_MISSING, guarded_view

from mqstore import _purepy, native


@pytest.fixture(params=["native", "python"])
def impl(request):
    """The module whose functions are under test: mqstore.native (C) or mqstore._purepy."""
    if request.param == "native":
        if native.backend != "native":
            pytest.skip(NATIVE_MISSING)
        return native
    return _purepy


@pytest.fixture
def guarded():
    """Factory of guarded buffers (see ``guarded_view``)."""
    return guarded_view

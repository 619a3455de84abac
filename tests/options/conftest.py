"""Hypothesis profiles for the codec's property tests.

``HYPOTHESIS_PROFILE=ci`` runs five times the examples of a local run (still random:
every CI run explores new inputs); ``HYPOTHESIS_PROFILE=quick`` is for editing loops.
Without the variable, hypothesis's defaults apply and each test scales its own example
count from them (see ``budget`` in the test modules), so the suite stays well under a minute.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=500,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("quick", max_examples=20, deadline=None)

_profile = os.environ.get("HYPOTHESIS_PROFILE")
if _profile in ("ci", "quick"):
    settings.load_profile(_profile)

"""Hypothesis profiles for the reliability suite, chosen with ``HYPOTHESIS_PROFILE``: ``ci`` (the
default: ~200 examples per property, derandomized so a red build is reproducible and never flaky, no
example database) and ``dev`` (10x the examples, random seeds, failures remembered in .hypothesis/)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev",
    max_examples=2000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

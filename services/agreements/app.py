"""``create_app()``: the agreements service's table of contents (gunicorn runs this)."""
from __future__ import annotations

from hecht.web import create_service_app

from .api import agreements
from .repository import ensure_indexes


def create_app(test_config: dict | None = None):
    """``test_config`` may carry ``HECHT_CLOCK``: a callable returning the current UTC datetime."""
    return create_service_app(
        "agreements",
        title="hecht agreements",
        description="Mandated collaboration agreements: drafting, mandate votes, signature and lifecycle.",
        blueprints=[agreements],
        index_setup=ensure_indexes,
        test_config=test_config,
    )

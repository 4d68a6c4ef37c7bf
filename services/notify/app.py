"""``create_app()``: the notify service's table of contents (gunicorn runs this)."""
from __future__ import annotations

from hecht.web import create_service_app

from .api import members, notifications, subscriptions
from .repository import ensure_indexes


def create_app(test_config: dict | None = None):
    return create_service_app(
        "notify",
        title="hecht notify",
        description="Webhook subscriptions for integrators (Standard Webhooks signatures, retries, replay) "
                    "and e-mail notifications to GPs in their language.",
        blueprints=[subscriptions, notifications, members],
        index_setup=ensure_indexes,
        test_config=test_config,
    )

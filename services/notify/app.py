"""``create_app()``: the notify service's table of contents (gunicorn runs this)."""
from __future__ import annotations

from hecht.web import create_service_app

from . import oauth
from .api import (apps, event_types, members, notifications, reject_inactive_integrators, sign_in_addresses,
                  sign_ins, subscriptions)
from .repository import ensure_indexes


def create_app(test_config: dict | None = None):
    app = create_service_app(
        "notify",
        title="hecht notify",
        description="Webhook subscriptions for integrators (Standard Webhooks signatures, retries, replay, "
                    "rate limits, circuit breaker), integrator applications and their OAuth 2.0 client "
                    "credentials, the event catalogue, and e-mail notifications to GPs in their language.",
        blueprints=[subscriptions, notifications, members, apps, sign_ins, sign_in_addresses, event_types,
                    oauth.tokens],
        index_setup=ensure_indexes,
        test_config=test_config,
    )
    hooks = app.before_request_funcs.setdefault(None, [])
    # The token endpoint takes a form body and HTTP Basic credentials: answered before hecht's
    # bearer-token hook, which would refuse both. Every other request then passes that hook, and
    # a token of an application that is not active is refused right after it.
    hooks.insert(0, oauth.handle_before)
    hooks.append(reject_inactive_integrators)
    return app

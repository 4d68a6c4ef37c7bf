"""``create_app()``: the members service's table of contents (gunicorn runs this)."""
from __future__ import annotations

from hecht.web import create_service_app

from .api import capacity, members, region_staff, regions, sign_in_addresses, sign_ins, staff
from .repository import ensure_indexes


def create_app(test_config: dict | None = None):
    return create_service_app(
        "members",
        title="hecht members",
        description="Regions, GP enrolment, roles, practice capacity (and its history), erasure and staff accounts.",
        blueprints=[regions, members, capacity, region_staff, staff, sign_ins, sign_in_addresses],
        index_setup=ensure_indexes,
        test_config=test_config,
    )

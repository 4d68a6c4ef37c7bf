"""schemathesis against each service's own /openapi.json, in-process, on the real stack.

Valid tokens for a real region, so requests get past auth and into the
handlers. Every response must be documented and no request may yield a 5xx.
(Driven through schemathesis' API rather than its pytest plugin, which does
not support pytest 9 yet.)
"""
from __future__ import annotations

import importlib
import warnings

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.conftest import bearer

REGION = {"id": "elz-fuzz", "name": "ELZ Fuzz", "country": "BE", "kind": "eerstelijnszone",
          "municipalities": ["Gent"]}
EXAMPLES = 12
# Every default check runs (no 5xx, documented status codes, content types and
# response schemas, ...) except "schema-valid data must be accepted": domain
# rules a schema cannot state (the municipality must lie in the region, RIZIV
# check digits, state transitions) rightly refuse schema-valid bodies with 422/409.
EXCLUDED = [positive_data_acceptance]


def fuzz(service: str) -> dict:
    warnings.simplefilter("ignore", UserWarning)
    app = importlib.import_module(f"services.{service}.app").create_app()
    members = importlib.import_module("services.members.app").create_app()
    assert members.test_client().post("/v1/regions", json=REGION,
                                      headers=bearer("platform-admin")).status_code == 201
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    headers = bearer("platform-admin")
    calls = {"operations": 0, "cases": 0}
    for result in schema.get_all_operations():
        operation = result.ok()
        calls["operations"] += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            if "region_id" in (case.path_parameters or {}):
                case.path_parameters["region_id"] = REGION["id"]
            calls["cases"] += 1
            case.call_and_validate(headers=headers, excluded_checks=EXCLUDED)

        run()
    return calls


@pytest.mark.parametrize("service", ["members", "agreements", "notify"])
def test_api_never_fails_or_breaks_its_documented_contract(hecht_env, service):
    pytest.importorskip(f"services.{service}.app", reason=f"the {service} service is not built yet")
    calls = fuzz(service)
    print(f"schemathesis {service}: {calls['operations']} operations, {calls['cases']} cases")
    assert calls["operations"] >= 3 and calls["cases"] >= calls["operations"]

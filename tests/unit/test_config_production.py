"""Configuration fails closed (issue 22, item 12): HECHT_ENV unset is production, and
production refuses to start with the published development secret, without a secret, or
without the issuer and audience every token must then carry. No I/O: building an app does
not touch the database."""
from __future__ import annotations

import importlib

import pytest

from hecht import cli
from hecht.config import DEV_JWT_SECRET, ConfigurationError, require_safe, settings

SERVICES = ("members", "agreements", "notify")
SECRET = "a-production-secret-" + "x" * 32
PRODUCTION = {"HECHT_JWT_SECRET": SECRET, "HECHT_JWT_ISSUER": "https://login.example.org/realms/hecht",
              "HECHT_JWT_AUDIENCE": "hecht"}


@pytest.fixture
def production(monkeypatch):
    """The environment of a deployment that forgot HECHT_ENV (i.e. production)."""
    for name in ("HECHT_ENV", "HECHT_JWT_SECRET", "HECHT_JWT_ISSUER", "HECHT_JWT_AUDIENCE", "HECHT_JWKS_URL"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def create(service: str):
    return importlib.import_module(f"services.{service}.app").create_app()


def test_unset_hecht_env_is_production_without_the_development_secret(production):
    s = settings("members")
    assert not s.development
    assert s.jwt_secret != DEV_JWT_SECRET


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_without_a_secret_refuses_to_start(production, service):
    with pytest.raises(ConfigurationError) as e:
        create(service)
    message = str(e.value)
    assert "\n" not in message and "HECHT_JWT_SECRET is not set" in message and "production" in message


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("secret, problem", [
    (DEV_JWT_SECRET, "the published development value"),
    ("short-secret", "shorter than 32 characters"),
])
def test_production_refuses_the_development_secret_and_short_ones(production, service, secret, problem):
    for name, value in PRODUCTION.items():
        production.setenv(name, value)
    production.setenv("HECHT_JWT_SECRET", secret)
    with pytest.raises(ConfigurationError, match=problem):
        create(service)


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("missing", ["HECHT_JWT_ISSUER", "HECHT_JWT_AUDIENCE"])
def test_production_requires_an_issuer_and_an_audience(production, service, missing):
    for name, value in PRODUCTION.items():
        production.setenv(name, value)
    production.delenv(missing)
    with pytest.raises(ConfigurationError, match=f"{missing} is not set"):
        create(service)


@pytest.mark.parametrize("service", SERVICES)
def test_production_with_its_own_secret_issuer_and_audience_starts(production, service):
    for name, value in PRODUCTION.items():
        production.setenv(name, value)
    app = create(service)
    assert app.extensions["hecht"].settings.jwt_secret == SECRET


@pytest.mark.parametrize("service", SERVICES)
def test_development_keeps_its_default_secret(production, service):
    production.setenv("HECHT_ENV", "development")
    assert create(service).extensions["hecht"].settings.jwt_secret == DEV_JWT_SECRET


def test_the_portal_refuses_to_start_without_a_secret_in_production(production):
    from services.portal import config
    with pytest.raises(ConfigurationError, match="HECHT_JWT_SECRET is not set"):
        config.load()
    production.setenv("HECHT_JWT_SECRET", DEV_JWT_SECRET)
    with pytest.raises(ConfigurationError, match="development value"):
        config.load()
    production.setenv("HECHT_JWT_SECRET", SECRET)
    assert config.load().hecht.jwt_secret == SECRET   # the portal verifies no tokens: no issuer needed


def test_require_safe_lists_every_problem_on_one_line(production):
    with pytest.raises(ConfigurationError) as e:
        require_safe(settings("members"))
    assert str(e.value).count(";") == 2 and "\n" not in str(e.value)


def test_hecht_token_needs_a_secret_outside_development(production, capsys):
    assert cli.main(["token", "--role", "platform-admin"]) == 2
    assert "HECHT_JWT_SECRET is not set" in capsys.readouterr().err


def test_hecht_token_refuses_a_lifetime_the_services_would_refuse(production, capsys):
    production.setenv("HECHT_ENV", "development")
    assert cli.main(["token", "--role", "platform-admin", "--ttl", str(100 * 365 * 86400)]) == 2
    assert "at most 86400 s" in capsys.readouterr().err
    assert cli.main(["token", "--role", "platform-admin"]) == 0   # the default (1 h) stays valid

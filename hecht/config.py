"""Settings from environment variables (12-factor), with safe local defaults.

Read once per process through :func:`settings`; tests override by setting
environment variables before building an app or a worker.

``HECHT_ENV`` unset means production: only ``HECHT_ENV=development`` (``make run``, the
tests) has a JWT secret by default. A web service refuses to start in production without
its own secret, issuer and audience (:func:`require_safe`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _float_list(raw: str) -> tuple[float, ...]:
    return tuple(float(x) for x in raw.split(",") if x.strip())


# The well-known development secret: only ever accepted with HECHT_ENV=development.
DEV_JWT_SECRET = "dev-only-insecure-secret-change-me-0123456789"
DEVELOPMENT_NAMES = ("development", "dev", "test")
MIN_JWT_SECRET_CHARS = 32


def is_development(env=None) -> bool:
    """``HECHT_ENV`` is development (``make run``, the tests); unset or anything else is production."""
    return (env if env is not None else os.environ).get("HECHT_ENV", "").strip().lower() in DEVELOPMENT_NAMES


class ConfigurationError(RuntimeError):
    """A setting a production service cannot run without; the message is one line."""


@dataclass(frozen=True)
class Settings:
    service: str
    mongo_uri: str
    kafka_bootstrap_servers: str
    topic_prefix: str = ""
    jwt_secret: str = DEV_JWT_SECRET
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    jwks_url: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    internal_jwt_issuer: str = "hecht-portal"   # the issuer of HS256 tokens when a JWKS is configured
    jwt_max_lifetime_s: int = 24 * 3600      # longest token (exp - iat) accepted from HECHT_JWT_ISSUER
    internal_jwt_max_lifetime_s: int = 300   # ... from the internal issuer (portal, OAuth) with a JWKS
    development: bool = False                # HECHT_ENV=development
    max_json_depth: int = 32                 # deeper request bodies get 400 before they are parsed
    max_uri_bytes: int = 4096                # longer request URIs get 414 (gunicorn's limit is above)
    max_body_bytes: int = 256 * 1024
    max_event_bytes: int = 512 * 1024    # a consumed event larger than this is dead-lettered unparsed
    signup_rate_limit: int = 20          # sign-ups per client address ...
    signup_rate_window_s: int = 60       # ... per this many seconds
    oauth_failure_limit: int = 10        # failed /oauth/token attempts per client id ...
    oauth_failure_window_s: int = 900    # ... per this many seconds (then 429 until it ends)
    idempotency_ttl_s: int = 24 * 3600
    log_level: str = "INFO"
    relay_poll_s: float = 0.05
    consumer_max_attempts: int = 3
    metrics_port: int = 9100
    smtp_url: str = "smtp://127.0.0.1:1025"
    smtp_from: str = "hecht <noreply@hecht.local>"
    webhook_encryption_key: str | None = None
    webhooks_allow_private: bool = False
    webhook_retry_schedule_s: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
    webhook_timeout_s: float = 15.0
    webhook_disable_after_failures: int = 5
    public_base_url: str = ""
    trusted_proxies: tuple[str, ...] = ()   # CIDRs whose X-Forwarded-For is believed (hecht/proxies.py)
    portal_url: str = "http://127.0.0.1:8000"    # e-mail links point at the portal's pages
    signup_confirm_days: int = 7         # a pending sign-up unconfirmed this long is stale
    portal_confirm_link_hours: int = 72  # lifetime of the portal's "confirm your address" link
    extra: dict = field(default_factory=dict)

    @property
    def database_name(self) -> str:
        """The database named in MONGO_URI's path, else ``hecht_<service>``."""
        from pymongo.uri_parser import parse_uri

        return parse_uri(self.mongo_uri).get("database") or f"hecht_{self.service}"

    def topic(self, name: str) -> str:
        """Full topic name; a prefix isolates test runs on a shared broker."""
        return f"{self.topic_prefix}{name}"


def settings(service: str) -> Settings:
    env = os.environ
    default_db = f"mongodb://127.0.0.1:27017/hecht_{service}"
    mongo_uri = env.get(f"HECHT_{service.upper()}_MONGO_URI") or env.get("MONGO_URI") or default_db
    return Settings(
        service=service,
        mongo_uri=mongo_uri,
        kafka_bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        topic_prefix=env.get("HECHT_TOPIC_PREFIX", ""),
        # No default outside development: require_safe() refuses to start a web service without one.
        jwt_secret=env.get("HECHT_JWT_SECRET") or (DEV_JWT_SECRET if is_development(env) else ""),
        jwt_algorithms=tuple(a.strip() for a in env.get("HECHT_JWT_ALGORITHMS", "HS256").split(",")),
        jwks_url=env.get("HECHT_JWKS_URL") or None,
        jwt_issuer=env.get("HECHT_JWT_ISSUER") or None,
        jwt_audience=env.get("HECHT_JWT_AUDIENCE") or None,
        internal_jwt_issuer=env.get("HECHT_INTERNAL_JWT_ISSUER") or "hecht-portal",
        jwt_max_lifetime_s=int(env.get("HECHT_JWT_MAX_LIFETIME_S") or 24 * 3600),
        internal_jwt_max_lifetime_s=int(env.get("HECHT_INTERNAL_JWT_MAX_LIFETIME_S") or 300),
        development=is_development(env),
        max_json_depth=int(env.get("HECHT_MAX_JSON_DEPTH") or 32),
        max_uri_bytes=int(env.get("HECHT_MAX_URI_BYTES") or 4096),
        max_body_bytes=int(env.get("HECHT_MAX_BODY_BYTES", 256 * 1024)),
        max_event_bytes=int(env.get("HECHT_MAX_EVENT_BYTES", 512 * 1024)),
        signup_rate_limit=int(env.get("HECHT_SIGNUP_RATE_LIMIT", 20)),
        signup_rate_window_s=int(env.get("HECHT_SIGNUP_RATE_WINDOW_S", 60)),
        oauth_failure_limit=int(env.get("HECHT_OAUTH_FAILURE_LIMIT") or 10),
        oauth_failure_window_s=int(env.get("HECHT_OAUTH_FAILURE_WINDOW_S") or 900),
        idempotency_ttl_s=int(env.get("HECHT_IDEMPOTENCY_TTL_S", 24 * 3600)),
        log_level=env.get("HECHT_LOG_LEVEL", "INFO"),
        relay_poll_s=float(env.get("HECHT_RELAY_POLL_S", 0.05)),
        consumer_max_attempts=int(env.get("HECHT_CONSUMER_MAX_ATTEMPTS", 3)),
        metrics_port=int(env.get("HECHT_METRICS_PORT", 9100)),
        smtp_url=env.get("HECHT_SMTP_URL", "smtp://127.0.0.1:1025"),
        smtp_from=env.get("HECHT_SMTP_FROM", "hecht <noreply@hecht.local>"),
        webhook_encryption_key=env.get("HECHT_WEBHOOK_ENCRYPTION_KEY") or None,
        webhooks_allow_private=_bool("HECHT_WEBHOOKS_ALLOW_PRIVATE", False),
        webhook_retry_schedule_s=_float_list(
            env.get("HECHT_WEBHOOK_RETRY_SCHEDULE_S", "5,300,1800,7200,18000,36000,36000")),
        webhook_timeout_s=float(env.get("HECHT_WEBHOOK_TIMEOUT_S", 15)),
        webhook_disable_after_failures=int(env.get("HECHT_WEBHOOK_DISABLE_AFTER_FAILURES", 5)),
        public_base_url=env.get("HECHT_PUBLIC_BASE_URL", ""),
        trusted_proxies=tuple(p.strip() for p in env.get("HECHT_TRUSTED_PROXIES", "").split(",") if p.strip()),
        portal_url=(env.get("HECHT_PORTAL_URL") or "http://127.0.0.1:8000").rstrip("/"),
        signup_confirm_days=int(env.get("HECHT_SIGNUP_CONFIRM_DAYS") or 7),
        portal_confirm_link_hours=int(env.get("HECHT_PORTAL_CONFIRM_LINK_HOURS") or 72),
    )


def production_problems(s: Settings, *, verifies_tokens: bool = True) -> list[str]:
    """What keeps ``s`` from being safe in production (empty in development)."""
    if s.development:
        return []
    problems = []
    if not s.jwt_secret:
        problems.append("HECHT_JWT_SECRET is not set")
    elif s.jwt_secret == DEV_JWT_SECRET:
        problems.append("HECHT_JWT_SECRET is the published development value")
    elif len(s.jwt_secret) < MIN_JWT_SECRET_CHARS:
        problems.append(f"HECHT_JWT_SECRET is shorter than {MIN_JWT_SECRET_CHARS} characters")
    if verifies_tokens:
        if not s.jwt_issuer:
            problems.append("HECHT_JWT_ISSUER is not set")
        if not s.jwt_audience:
            problems.append("HECHT_JWT_AUDIENCE is not set")
    return problems


def require_safe(s: Settings, *, verifies_tokens: bool = True) -> Settings:
    """``s``, or :class:`ConfigurationError` (one line) when production would run with unsafe settings.

    Production is every ``HECHT_ENV`` but development: a forgotten variable must stop the
    service at start-up, not leave it running with a secret anyone can read in the source.
    """
    problems = production_problems(s, verifies_tokens=verifies_tokens)
    if problems:
        raise ConfigurationError(
            f"hecht {s.service}: refusing to start in production (HECHT_ENV is not 'development'): "
            + "; ".join(problems) + " (openssl rand -hex 32 makes a secret)")
    return s

"""The members service in process, for the integration tests that need a region and its
database: a Flask test client with the region registered, the database, RIZIV numbers.
Called from each module's own fixture, which sets the environment first."""
from __future__ import annotations

from hecht import mongo
from hecht.config import settings
from tests.conftest import bearer


def members_client(region: dict):
    """A members test client with ``region`` registered (the caller's fixture sets the env)."""
    from services.members.app import create_app
    c = create_app().test_client()
    r = c.post("/v1/regions", json=region, headers=bearer("platform-admin"))
    assert r.status_code == 201, r.get_data(as_text=True)
    return c


def members_db():
    s = settings("members")
    return mongo.database(s.mongo_uri, s.database_name)


def riziv(n6: int, code: str = "003") -> str:
    """A RIZIV number that passes the check digits: six digits, 97 - n mod 97, competence code."""
    return f"{n6:06d}{97 - n6 % 97:02d}{code}"

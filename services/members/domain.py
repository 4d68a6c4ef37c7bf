"""Members domain: pure rules, no I/O.

Commands are imperative (``RegisterRegion``); the events they produce are
past tense (``region.registered``) and carry the aggregate's full state, so a
tolerant reader needs no earlier event to understand one.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from hecht.errors import Invalid

COUNTRIES = ("NL", "BE")
REGION_KINDS = ("zorggroep", "huisartsenkring", "regio-organisatie", "eerstelijnszone", "other")


@dataclass(frozen=True)
class MandatePolicy:
    quorum: float = 0.5               # share of the electorate that must vote
    approval_threshold: float = 0.5   # share of votes cast that must be "for"
    voting_period_days: int = 14

    def __post_init__(self):
        errors = {}
        if not 0 <= self.quorum <= 1:
            errors["quorum"] = ["must be between 0 and 1"]
        if not 0 < self.approval_threshold <= 1:
            errors["approval_threshold"] = ["must be greater than 0 and at most 1"]
        if not 1 <= self.voting_period_days <= 90:
            errors["voting_period_days"] = ["must be between 1 and 90 days"]
        if errors:
            raise Invalid("the mandate policy is not valid", errors={"mandate_policy": errors})


@dataclass
class Region:
    id: str
    name: str
    country: str
    kind: str
    municipalities: list[str]
    mandate_policy: MandatePolicy = field(default_factory=MandatePolicy)

    def __post_init__(self):
        if isinstance(self.mandate_policy, dict):
            self.mandate_policy = MandatePolicy(**self.mandate_policy)
        self.municipalities = _unique(self.municipalities)

    def covers(self, municipality: str) -> bool:
        return municipality.casefold() in {m.casefold() for m in self.municipalities}

    def event_data(self) -> dict:
        return {"region_id": self.id, "name": self.name, "country": self.country, "kind": self.kind,
                "municipalities": list(self.municipalities), "mandate_policy": asdict(self.mandate_policy)}


def _unique(items: list[str]) -> list[str]:
    """Municipalities in the order given, without case-insensitive repeats."""
    seen, out = set(), []
    for m in (i.strip() for i in items):
        if m and m.casefold() not in seen:
            seen.add(m.casefold())
            out.append(m)
    return out


# -- commands -------------------------------------------------------------------------------
@dataclass(frozen=True)
class RegisterRegion:
    region: Region


@dataclass(frozen=True)
class UpdateRegion:
    region_id: str
    expected_version: int | None
    changes: dict

"""Human labels (translated) for the services' codes: statuses, themes, roles, …"""
from __future__ import annotations

from flask_babel import lazy_gettext as _l

LABELS = {
    "member_status": {"pending": _l("Waiting for approval"), "active": _l("Active"), "suspended": _l("Suspended"),
                      "left": _l("Left"), "rejected": _l("Not approved"), "erased": _l("Erased")},
    "agreement_status": {"draft": _l("Draft"), "in_consultation": _l("Vote open"), "mandated": _l("Mandated"),
                         "rejected": _l("Mandate refused"), "active": _l("Active"), "expired": _l("Expired"),
                         "terminated": _l("Terminated"), "superseded": _l("Replaced by a new version")},
    "mandate_status": {"open": _l("Open"), "passed": _l("Passed"), "rejected": _l("Rejected")},
    "theme": {"chronic-care": _l("Chronic care"), "frail-elderly": _l("Frail elderly"),
              "out-of-hours": _l("Out-of-hours care"), "mental-health": _l("Mental health"),
              "data-exchange": _l("Data exchange"), "labour-market": _l("Labour market"),
              "prevention": _l("Prevention"), "medication": _l("Medication"), "other": _l("Other")},
    "partner_kind": {"hospital": _l("Hospital"), "municipality": _l("Municipality"),
                     "home-nursing": _l("Home nursing"), "pharmacy": _l("Pharmacy"),
                     "mental-health": _l("Mental health care"), "social-domain": _l("Social services"),
                     "out-of-hours-post": _l("Out-of-hours GP post"), "nursing-home": _l("Nursing home"),
                     "other": _l("Other")},
    "role": {"member": _l("Member"), "board": _l("Board member"), "chair": _l("Chair"),
             "secretary": _l("Secretary"), "care-pathway-promoter": _l("Care pathway promoter"),
             "cra": _l("Coordinating GP (CRA)")},
    "category": {"practice-owner": _l("Practice owner"), "employed": _l("Employed GP"), "locum": _l("Locum"),
                 "gp-in-training": _l("GP in training")},
    "capacity": {"open": _l("Open"), "limited": _l("Limited"), "closed": _l("Closed (patient stop)")},
    "region_kind": {"zorggroep": _l("Care group"), "huisartsenkring": _l("GP circle"),
                    "regio-organisatie": _l("Regional organisation"), "eerstelijnszone": _l("Primary care zone"),
                    "other": _l("Other")},
    "country": {"NL": _l("the Netherlands"), "BE": _l("Belgium")},
    "choice": {"for": _l("For"), "against": _l("Against"), "abstain": _l("Abstain")},
}


def label(value, kind: str) -> str:
    if value is None:
        return ""
    return str(LABELS.get(kind, {}).get(value, value))

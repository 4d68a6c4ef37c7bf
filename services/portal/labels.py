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
    "mandate_body": {"assembly": _l("Members' assembly"), "board": _l("Board"), "council": _l("Care council")},
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
    # A registration scheme as people know it in their language (INAMI in French, RIZIV in
    # Dutch); the code stays what the API stores and checks.
    "scheme": {"RIZIV": _l("RIZIV/INAMI")},
    "choice": {"for": _l("For"), "against": _l("Against"), "abstain": _l("Abstain")},
    "notification_status": {"queued": _l("Queued"), "sent": _l("Sent"), "failed": _l("Failed")},
    "template": {"enrolment_approved": _l("Sign-up approved"), "enrolment_rejected": _l("Sign-up not approved"),
                 "vote_opened": _l("Vote opened"), "vote_closing": _l("Vote closing soon"),
                 "mandate_passed": _l("Mandate given"), "mandate_rejected": _l("Mandate refused"),
                 "agreement_activated": _l("Agreement in force"), "review_due": _l("Review due"),
                 "integrator_invited": _l("Integrator invitation")},
    "event": {"member.signed_up": _l("Signed up"), "member.email_verified": _l("E-mail address confirmed"),
              "member.enrolled": _l("Sign-up approved"), "member.rejected": _l("Sign-up not approved"),
              "member.suspended": _l("Suspended"), "member.reinstated": _l("Reinstated"), "member.left": _l("Left"),
              "member.erased": _l("Erased"), "member.roles_changed": _l("Roles changed"),
              "member.capacity_changed": _l("Capacity changed"), "member.profile_updated": _l("Details changed"),
              "agreement.drafted": _l("Drafted"), "agreement.revised": _l("Draft changed"),
              "agreement.mandate_requested": _l("Vote opened"), "agreement.vote_cast": _l("A vote was cast"),
              "agreement.proxy_recorded": _l("A proxy was given"), "agreement.proxy_revoked": _l("A proxy was revoked"),
              "agreement.mandated": _l("Mandate given"), "agreement.mandate_rejected": _l("Mandate refused"),
              "agreement.signed": _l("Signed"), "agreement.activated": _l("Agreement in force"),
              "agreement.review_due": _l("Review due"), "agreement.expired": _l("Expired"),
              "agreement.terminated": _l("Terminated"), "agreement.superseded": _l("Replaced by a new version"),
              "region.registered": _l("Region created"), "region.updated": _l("Settings changed")},
    "staff_status": {"invited": _l("Invited"), "active": _l("Active"), "revoked": _l("Revoked")},
    "integrator_status": {"invited": _l("Invited"), "active": _l("Active"), "suspended": _l("Suspended"),
                          "deleted": _l("Deleted")},
    "circuit": {"closed": _l("Delivering"), "open": _l("Paused after failures (circuit open)"),
                "half-open": _l("Trying one probe delivery (half-open)")},
    "circuit_short": {"closed": _l("closed"), "open": _l("open"), "half-open": _l("half-open")},
    "delivery_status": {"pending": _l("Pending"), "succeeded": _l("Delivered"), "failed": _l("Failed")},
    "signature": {"v1": _l("v1: HMAC-SHA256 with a shared secret"),
                  "v1a": _l("v1a: ed25519, verified with a public key")},
}


def label(value, kind: str) -> str:
    if value is None:
        return ""
    return str(LABELS.get(kind, {}).get(value, value))

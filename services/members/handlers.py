"""Commands → domain → repository. The routing table at the bottom is the map of behaviour."""
from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone

from hecht.errors import Conflict, HechtError, Invalid, InvalidTransition, NotFound, PreconditionFailed
from hecht import topics
from hecht.outbox import EventDraft, RecordDraft
from hecht.web import new_id

from . import domain
from .repository import MemberRepository, RegionRepository, StaffRepository, refresh_snapshot

log = logging.getLogger(__name__)


def register_region(cmd: domain.RegisterRegion, repos: "Repos", trace: str | None) -> dict:
    region = cmd.region
    return repos.regions.add(region, [EventDraft("region.registered", region.event_data())], trace)


UNCONDITIONAL_ATTEMPTS = 3


def _unless_conditional(cmd, step):
    """Run ``step()``; a request without If-Match that lost a race is re-read and re-applied.

    A client that sent no ETag asked for "this change on the current state", so a
    concurrent writer is not its problem: the transition is checked again against the
    fresh state (and may then be refused by the domain). With If-Match, 412 stands.
    """
    for attempt in range(1, UNCONDITIONAL_ATTEMPTS + 1):
        try:
            return step()
        except PreconditionFailed:
            if cmd.expected_version is not None or attempt == UNCONDITIONAL_ATTEMPTS:
                raise


def update_region(cmd: domain.UpdateRegion, repos: "Repos", trace: str | None) -> dict:
    def step() -> dict:
        region, version = repos.regions.get(cmd.region_id)
        if cmd.expected_version is not None and cmd.expected_version != version:
            raise PreconditionFailed(f"region {cmd.region_id} has changed (current ETag \"{version}\")")
        changes = dict(cmd.changes)
        if "mandate_policy" in changes:
            # Every change is a new policy version; votes already open keep the one they froze.
            policy = region.mandate_policy.changed(changes["mandate_policy"])
            if "seats" in changes["mandate_policy"]:   # checked when set: a later departure must not block edits
                _check_seats(repos, cmd.region_id, policy)
            changes["mandate_policy"] = policy
        if "municipalities" in changes:
            _check_affected(repos, region, changes["municipalities"], cmd.confirm_affected)
        updated = replace(region, **changes)
        return repos.regions.save(updated, version, [EventDraft("region.updated", updated.event_data())], trace)
    return _unless_conditional(cmd, step)


def _check_seats(repos: "Repos", region_id: str, policy: domain.MandatePolicy) -> None:
    """A council seat is held by a member of the region (422 naming the others)."""
    wanted = [s.member_id for s in policy.seats]
    if not wanted:
        return
    known = {d["_id"] for d in repos.members.coll.find(
        {"_id": {"$in": wanted}, "region": region_id, "status": {"$in": ["pending", "active", "suspended"]}},
        {"_id": 1})}
    unknown = [m for m in wanted if m not in known]
    if unknown:
        raise Invalid("council seats must be held by members of the region",
                      errors={"mandate_policy": {"seats": [f"no member {m} in region {region_id}" for m in unknown]}})


AFFECTED_STATUSES = ("pending", "active", "suspended")


def _check_affected(repos: "Repos", region: domain.Region, wanted: list[str], confirmed: bool) -> None:
    """Removing a municipality strands the members practising there (they leave the assembly's
    electorate): 409 listing them unless the change is confirmed (``confirm_affected``)."""
    removed = region.removed_municipalities(wanted)
    if not removed:
        return
    affected = [{"member_id": d["_id"], "municipality": d["practice"]["municipality"], "status": d["status"]}
                for d in repos.members.coll.find(
                    {"region": region.id, "status": {"$in": list(AFFECTED_STATUSES)},
                     "practice.municipality": {"$in": removed}},
                    {"_id": 1, "status": 1, "practice.municipality": 1}).sort("_id", 1)]
    if affected and not confirmed:
        raise Conflict(f"removing {', '.join(removed)} affects {len(affected)} member(s) whose practice lies "
                       "there; they would leave the electorate. Send the change again with "
                       "confirm_affected: true to confirm", reason="members-affected", affected=affected)


# -- members --------------------------------------------------------------------------------
# Notices: a contact record on ``hecht.members.contacts`` may carry ``notice``, an
# e-mail notify sends the member once (by the notice's id). Internal, like the whole topic.
SIGN_UP_CONFIRM = "sign_up_confirm"   # a new sign-up not made through the portal: confirm the address
SIGN_UP_ATTEMPT = "sign_up_attempt"   # someone signed up with an enrolled address or registration
NOTICE_QUIET = timedelta(hours=1)     # at most one sign-up-attempt e-mail per member in this time
SIGN_UP_ATTEMPTS = 5                  # rounds of deciding again after losing a race


def _notice(kind: str, **extra) -> dict:
    return {"id": str(uuid.uuid4()), "kind": kind, **extra}


def sign_up(cmd: domain.SignUp, repos: "Repos", trace: str | None) -> dict | None:
    """The new member, or None when the address or the registration is already enrolled in the
    region (for a region-admin: the 409 naming the rule).

    Nobody else may tell the two apart: the caller gets the same answer, and the
    e-mail goes to the enrolled member instead. Both outcomes are one transaction with what makes
    the e-mail go (a contact record with a ``notice``, outbox): the new member with its
    confirmation notice (unless the portal asks: it mails its own link), or the attempt notice
    under each matched member, guarded by their version (decided on the state it writes to).
    """
    region = repos.regions.get_recent(cmd.region_id)
    member = domain.sign_up(new_id("m"), region, cmd.data)
    staff = cmd.caller == "staff"
    for _ in range(SIGN_UP_ATTEMPTS):
        holders = [] if staff else repos.members.holders(member)
        if holders:
            try:
                repos.members.note_sign_up_attempt(
                    [(doc, via, _notice(SIGN_UP_ATTEMPT, via=via)) for doc, via in holders],
                    datetime.now(timezone.utc), NOTICE_QUIET)
            except PreconditionFailed:
                continue   # the member changed meanwhile (erased, a new address): decide again
            return None
        records = _contact_records(None, member)
        if cmd.caller == "public":
            records = [RecordDraft(r.topic, r.key, {**r.value, "notice": _notice(SIGN_UP_CONFIRM)})
                       for r in records]
        try:
            return repos.members.add(member, [EventDraft("member.signed_up", member.event_data())], trace,
                                     records=records)
        except Conflict:
            if staff:
                raise
            continue   # enrolled concurrently: the attempt notice goes to whoever won
    raise Conflict("the sign-up met concurrent sign-ups with the same address or registration; retry")


def _contact_records(before: dict | None, member: domain.Member) -> list[RecordDraft]:
    """The member's contact record for ``hecht.members.contacts`` when it changed, written with
    the change (outbox); a tombstone when the member was erased."""
    after = member.contact_data()
    if after == before:
        return []
    return [RecordDraft(topics.MEMBER_CONTACTS, member.id, after)]


def _change(cmd: domain.MemberCommand, repos: "Repos", trace: str | None, apply) -> dict:
    """Load, check the expected version, apply one domain transition, save with its event."""
    def step() -> dict:
        member, version = repos.members.get(cmd.region_id, cmd.member_id)
        if cmd.expected_version is not None and cmd.expected_version != version:
            raise PreconditionFailed(f"member {cmd.member_id} has changed (current ETag \"{version}\"); "
                                     "read it again")
        before = member.contact_data()
        event_type = apply(member)
        data = member.verified_event_data() if event_type == "member.email_verified" else member.event_data()
        return repos.members.save(member, version, [EventDraft(event_type, data)], trace,
                                  records=_contact_records(before, member))
    return _unless_conditional(cmd, step)


def approve_member(cmd: domain.ApproveMember, repos: "Repos", trace: str | None) -> dict:
    return _change(cmd, repos, trace, lambda m: m.approve())


def reject_member(cmd: domain.RejectMember, repos: "Repos", trace: str | None) -> dict:
    return _change(cmd, repos, trace, lambda m: m.reject(cmd.reason))


def suspend_member(cmd: domain.SuspendMember, repos: "Repos", trace: str | None) -> dict:
    return _change(cmd, repos, trace, lambda m: m.suspend(cmd.reason))


def reinstate_member(cmd: domain.ReinstateMember, repos: "Repos", trace: str | None) -> dict:
    return _change(cmd, repos, trace, lambda m: m.reinstate())


def leave_region(cmd: domain.LeaveRegion, repos: "Repos", trace: str | None) -> dict:
    return _change(cmd, repos, trace, lambda m: m.leave(cmd.reason))


def set_roles(cmd: domain.SetRoles, repos: "Repos", trace: str | None) -> dict:
    def apply(member: domain.Member) -> str:
        event = member.set_roles(list(cmd.roles))
        holder = repos.members.chair_holder(cmd.region_id)
        if member.holds_chair and holder not in (None, member.id):
            # A friendly answer; the unique index on chair_seat is what guarantees it.
            raise Conflict(f"region {cmd.region_id} already has a chair ({holder}); take the role from them first",
                           errors={"roles": ["the region already has a chair"]}, chair=holder)
        return event
    return _change(cmd, repos, trace, apply)


def set_capacity(cmd: domain.SetCapacity, repos: "Repos", trace: str | None) -> dict:
    return _change(cmd, repos, trace, lambda m: m.set_capacity(cmd.capacity))


def update_profile(cmd: domain.UpdateProfile, repos: "Repos", trace: str | None) -> dict:
    region, _ = repos.regions.get(cmd.region_id)
    return _change(cmd, repos, trace, lambda m: m.update_profile(cmd.changes, region))


def reconfirm(cmd: domain.Reconfirm, repos: "Repos", trace: str | None) -> dict:
    region, _ = repos.regions.get(cmd.region_id)
    return _change(cmd, repos, trace, lambda m: m.reconfirm(cmd.changes, region))


def announce_reverification_due(db, now: datetime | None = None, *, trace: str | None = None) -> list[str]:
    """``member.reverification_due`` for every member past their re-confirmation, once per due
    period: the period announced is stored on the member with the event (outbox, version-guarded),
    so a second pass, a restarted worker or a concurrent one finds it done. Returns the ids announced."""
    now = now or datetime.now(timezone.utc)
    repos = Repos(db)
    announced = []
    for region_doc in db.regions.find({}, {"_id": 1, "mandate_policy": 1}).sort("_id", 1):
        months = domain.MandatePolicy(**region_doc["mandate_policy"]).reverify_months
        for member_id in repos.members.reverify_due_ids(region_doc["_id"], now, months):
            def apply(m: domain.Member) -> str:
                due = m.reverify_due_at(months)
                if due is None or due > now:   # re-confirmed or gone since the query
                    return _no_change()
                return m.mark_reverification_due(due) or _no_change()
            try:
                _change(domain.MemberCommand(region_doc["_id"], member_id), repos, trace, apply)
            except (_NoChange, InvalidTransition, NotFound):
                continue
            announced.append(member_id)
    if announced:
        log.info("re-verification due announced", extra={"members": len(announced)})
    return announced


def erase_member(cmd: domain.EraseMember, repos: "Repos", trace: str | None) -> dict:
    def apply(member: domain.Member) -> str:
        if cmd.only_if_stale is not None and not member.is_stale(*cmd.only_if_stale):
            # Checked on the state being replaced (the save is version-guarded): a GP who
            # confirmed their address since the purge looked is kept.
            raise Conflict(f"member {member.id} is no longer a stale sign-up")
        return member.erase()
    doc = _change(cmd, repos, trace, apply)
    repos.members.purge_personal(cmd.member_id, f"/v1/regions/{cmd.region_id}/members/{cmd.member_id}")
    return doc


def sign_in(cmd: domain.SignIn, repos: "Repos", trace: str | None) -> tuple[str, list[dict], dict | None]:
    """(normalised address, its memberships, its staff account or None): each membership not
    yet proven gets ``email_verified_at`` now, with its ``member.email_verified`` event, and an
    invited staff account becomes active (``staff.activated``); later sign-ins change nothing.
    A revoked account is not returned: it may no longer sign in to the console."""
    email = domain.sign_in_email(cmd.email)
    staff = _sign_in_staff(email, repos, trace)
    at = datetime.now(timezone.utc)
    out = []
    for doc in repos.members.with_email(email):
        if doc.get("email_verified_at") is None:
            change = domain.MemberCommand(doc["region"], doc["_id"])
            try:
                doc = _change(change, repos, trace, lambda m: m.verify_email(at) or _no_change())
            except _NoChange:
                doc = repos.members.get_doc(doc["region"], doc["_id"])
            except (InvalidTransition, NotFound):
                continue  # erased meanwhile: no longer theirs to list
        if doc.get("status") != "erased" and domain.email_key(doc.get("email") or "") == domain.email_key(email):
            out.append(doc)
    return email, out, staff


def sign_in_addresses(email: str, repos: "Repos") -> list[dict]:
    """The stored addresses (with the person's language) of the accounts the typed ``email``
    names under the rule of hecht/emails.py: its non-erased memberships and its non-revoked
    staff account. The portal mails a sign-in link to each of them, never to the typed address;
    nothing changes here."""
    email = domain.sign_in_email(email)
    found: dict[str, str | None] = {}
    for doc in repos.members.with_email(email):
        if doc.get("status") != "erased" and doc.get("email"):
            found.setdefault(doc["email"], doc.get("language"))
    staff = repos.staff.with_email(email)
    if staff is not None and staff["status"] != "revoked":
        found.setdefault(staff["email"], staff.get("language"))
    return [{"email": e, "language": lang} for e, lang in found.items()]


def _sign_in_staff(email: str, repos: "Repos", trace: str | None) -> dict | None:
    doc = repos.staff.with_email(email)
    if doc is None or doc["status"] == "revoked":
        return None
    if doc["status"] == "invited":
        try:
            doc = _staff_change(domain.StaffCommand(doc["_id"]), repos, trace,
                                lambda s: s.activate() or _no_change())
        except _NoChange:   # activated by a concurrent sign-in
            doc = repos.staff.get_doc(doc["_id"])
        except InvalidTransition:   # revoked meanwhile
            return None
    return doc if doc["status"] != "revoked" else None


class _NoChange(HechtError):
    """Raised inside a change that turned out to be a no-op (verified by a concurrent sign-in)."""


def _no_change() -> str:
    raise _NoChange("already verified")


def purge_unconfirmed(db, now: datetime | None = None, confirm_days: int = 7, *,
                      dry_run: bool = False, trace: str | None = None) -> list[str]:
    """Erase every stale sign-up (see ``domain.is_stale_sign_up``) through the normal erasure,
    so ``member.erased`` flows and the other services forget the person too. Returns the ids
    erased (or, with ``dry_run``, that would be)."""
    now = now or datetime.now(timezone.utc)
    repos = Repos(db)
    erased = []
    for region, member_id in repos.members.stale_ids(now, confirm_days):
        if dry_run:
            erased.append(member_id)
            continue
        try:
            erase_member(domain.EraseMember(region, member_id, only_if_stale=(now, confirm_days)), repos, trace)
        except (Conflict, InvalidTransition, NotFound, PreconditionFailed) as e:
            log.info("stale sign-up kept", extra={"member": member_id, "why": str(e)})
            continue
        erased.append(member_id)
    return erased


# -- staff accounts ------------------------------------------------------------------------------
def _check_regions(repos: "Repos", regions: list[str]) -> None:
    """Every region an account would administer exists (422 naming the unknown ones)."""
    known = {d["_id"] for d in repos.regions.db.regions.find({"_id": {"$in": list(regions)}}, {"_id": 1})}
    unknown = [r for r in regions if r not in known]
    if unknown:
        raise Invalid("unknown region(s)", errors={"admin_of": [f"no region {r}" for r in unknown]})


def _staff_change(cmd: domain.StaffCommand, repos: "Repos", trace: str | None, apply) -> dict:
    """Load, check the expected version, apply one domain change, save with its event."""
    def step() -> dict:
        staff, version = repos.staff.get(cmd.staff_id)
        if cmd.expected_version is not None and cmd.expected_version != version:
            raise PreconditionFailed(f"staff account {cmd.staff_id} has changed (current ETag \"{version}\"); "
                                     "read it again")
        event_type = apply(staff)
        return repos.staff.save(staff, version, [EventDraft(event_type, staff.event_data())], trace)
    return _unless_conditional(cmd, step)


def invite_staff(cmd: domain.InviteStaff, repos: "Repos", trace: str | None) -> dict:
    staff = domain.invite_staff(new_id("stf"), cmd.data)
    _check_regions(repos, staff.admin_of)
    return repos.staff.add(staff, [EventDraft("staff.invited", staff.event_data())], trace)


def update_staff(cmd: domain.UpdateStaff, repos: "Repos", trace: str | None) -> dict:
    if "admin_of" in cmd.changes:
        _check_regions(repos, list(cmd.changes["admin_of"] or []))
    return _staff_change(cmd, repos, trace, lambda s: s.update(cmd.changes))


def revoke_staff(cmd: domain.RevokeStaff, repos: "Repos", trace: str | None) -> dict:
    return _staff_change(cmd, repos, trace, lambda s: s.revoke())


def invite_region_admin(cmd: domain.InviteRegionAdmin, repos: "Repos", trace: str | None) -> tuple[dict, bool]:
    """(the account, whether it is new). An address already on an account: that account gains
    the region (a revoked one is invited afresh); the name and language it has are kept."""
    repos.regions.get_doc(cmd.region_id)
    data = {**cmd.data, "platform_admin": False, "admin_of": [cmd.region_id]}
    staff = domain.invite_staff(new_id("stf"), data)   # validates the fields (422) in any case
    for _ in range(UNCONDITIONAL_ATTEMPTS):
        existing = repos.staff.with_email(staff.email)
        if existing is None:
            try:
                return repos.staff.add(staff, [EventDraft("staff.invited", staff.event_data())], trace), True
            except Conflict:
                continue   # invited concurrently: gain the region on that account
        try:
            return _staff_change(domain.StaffCommand(existing["_id"]), repos, trace,
                                 lambda s: s.grant_region(cmd.region_id) or _no_change()), False
        except _NoChange:
            return repos.staff.get_doc(existing["_id"]), False
    raise Conflict("the address was invited concurrently; retry")


def remove_region_admin(cmd: domain.RemoveRegionAdmin, repos: "Repos", trace: str | None) -> dict:
    """The account no longer administers the region (404 if it did not); revoked when no role is left."""
    def apply(s: domain.Staff) -> str:
        if cmd.region_id not in s.admin_of or s.status == "revoked":
            raise NotFound(f"staff account {cmd.staff_id} not found in region {cmd.region_id}")
        return s.drop_region(cmd.region_id)
    try:
        return _staff_change(domain.StaffCommand(cmd.staff_id), repos, trace, apply)
    except NotFound:
        raise NotFound(f"staff account {cmd.staff_id} not found in region {cmd.region_id}") from None


def add_staff_directly(cmd: domain.AddStaffDirectly, repos: "Repos", trace: str | None) -> tuple[dict, str]:
    """``hecht staff add``: (the account, "created" | "updated" | "unchanged"). An address already
    on an account keeps that account, now active with exactly the roles given."""
    wanted = domain.invite_staff(new_id("stf"), cmd.data, active=True)
    _check_regions(repos, wanted.admin_of)
    existing = repos.staff.with_email(wanted.email)
    if existing is None:
        return repos.staff.add(wanted, [EventDraft("staff.activated", wanted.event_data())], trace), "created"

    def apply(s: domain.Staff) -> str:
        return s.make_exactly(wanted) or _no_change()
    try:
        return _staff_change(domain.StaffCommand(existing["_id"]), repos, trace, apply), "updated"
    except _NoChange:
        return repos.staff.get_doc(existing["_id"]), "unchanged"


class Repos:
    """The repositories one command may use (a unit of work without transactions)."""

    def __init__(self, db):
        self.regions = RegionRepository(db)
        self.members = MemberRepository(db)
        self.staff = StaffRepository(db)


COMMAND_HANDLERS = {
    domain.RegisterRegion: register_region,
    domain.UpdateRegion: update_region,
    domain.SignUp: sign_up,
    domain.ApproveMember: approve_member,
    domain.RejectMember: reject_member,
    domain.SuspendMember: suspend_member,
    domain.ReinstateMember: reinstate_member,
    domain.LeaveRegion: leave_region,
    domain.SetRoles: set_roles,
    domain.SetCapacity: set_capacity,
    domain.UpdateProfile: update_profile,
    domain.EraseMember: erase_member,
    domain.Reconfirm: reconfirm,
    domain.SignIn: sign_in,
    domain.InviteStaff: invite_staff,
    domain.UpdateStaff: update_staff,
    domain.RevokeStaff: revoke_staff,
    domain.InviteRegionAdmin: invite_region_admin,
    domain.RemoveRegionAdmin: remove_region_admin,
    domain.AddStaffDirectly: add_staff_directly,
}


# The commands that can change a region's capacity counts (active members by municipality and
# capacity): today's snapshot, once taken, is counted again after each.
CAPACITY_COMMANDS = (domain.UpdateRegion, domain.ApproveMember, domain.SuspendMember, domain.ReinstateMember,
                     domain.LeaveRegion, domain.SetCapacity, domain.UpdateProfile, domain.EraseMember)


def _refresh_capacity_snapshot(db, region_id: str) -> None:
    try:
        refresh_snapshot(db, region_id, datetime.now(timezone.utc).date())
    except Exception as e:  # noqa: BLE001 - the command is done; the next change counts again
        log.warning("today's capacity snapshot not refreshed",
                    extra={"region": region_id, "error": f"{type(e).__name__}: {e}"})


def handle(cmd, db, trace: str | None = None):
    result = COMMAND_HANDLERS[type(cmd)](cmd, Repos(db), trace)
    if isinstance(cmd, CAPACITY_COMMANDS):
        _refresh_capacity_snapshot(db, cmd.region_id)
    return result

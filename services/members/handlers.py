"""Commands → domain → repository. The routing table at the bottom is the map of behaviour."""
from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timezone

from hecht.errors import Conflict, HechtError, InvalidTransition, NotFound, PreconditionFailed
from hecht.outbox import EventDraft
from hecht.web import new_id

from . import domain
from .repository import MemberRepository, RegionRepository

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
            changes["mandate_policy"] = domain.MandatePolicy(**{**region.mandate_policy.__dict__,
                                                                **changes["mandate_policy"]})
        updated = replace(region, **changes)
        return repos.regions.save(updated, version, [EventDraft("region.updated", updated.event_data())], trace)
    return _unless_conditional(cmd, step)


# -- members --------------------------------------------------------------------------------
def sign_up(cmd: domain.SignUp, repos: "Repos", trace: str | None) -> dict:
    region = repos.regions.get_recent(cmd.region_id)
    member = domain.sign_up(new_id("m"), region, cmd.data)
    return repos.members.add(member, [EventDraft("member.signed_up", member.event_data())], trace)


def _change(cmd: domain.MemberCommand, repos: "Repos", trace: str | None, apply) -> dict:
    """Load, check the expected version, apply one domain transition, save with its event."""
    def step() -> dict:
        member, version = repos.members.get(cmd.region_id, cmd.member_id)
        if cmd.expected_version is not None and cmd.expected_version != version:
            raise PreconditionFailed(f"member {cmd.member_id} has changed (current ETag \"{version}\"); "
                                     "read it again")
        event_type = apply(member)
        data = member.verified_event_data() if event_type == "member.email_verified" else member.event_data()
        return repos.members.save(member, version, [EventDraft(event_type, data)], trace)
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


def sign_in(cmd: domain.SignIn, repos: "Repos", trace: str | None) -> tuple[str, list[dict]]:
    """(normalised address, its memberships): each one not yet proven gets ``email_verified_at``
    now, with its ``member.email_verified`` event; later sign-ins change nothing."""
    email = domain.sign_in_email(cmd.email)
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
        if doc.get("status") != "erased" and domain.email_key(doc.get("email") or "") == email.casefold():
            out.append(doc)
    return email, out


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


class Repos:
    """The repositories one command may use (a unit of work without transactions)."""

    def __init__(self, db):
        self.regions = RegionRepository(db)
        self.members = MemberRepository(db)


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
    domain.SignIn: sign_in,
}


def handle(cmd, db, trace: str | None = None):
    return COMMAND_HANDLERS[type(cmd)](cmd, Repos(db), trace)

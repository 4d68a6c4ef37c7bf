"""HTTP ↔ commands for the members service. Views translate; handlers decide."""
from __future__ import annotations

from datetime import date, datetime, timezone

from flask import g, request
from flask_smorest import Blueprint

from hecht.auth import PORTAL, REGION_ROLES, Principal
from hecht.errors import Forbidden
from hecht.web import (PageArgsSchema, allow, conditional_version, ctx, etag, idempotent, paginate, principal,
                       public, rate_limit, require)

from . import domain, handlers
from .repository import (INTERNAL_FIELDS, STAFF_INTERNAL_FIELDS, MemberRepository, RegionRepository,
                         StaffRepository, snapshot_history, take_snapshot)
from .schemas import (CapacityHistorySchema, CapacityOverviewSchema, CapacitySchema, HistoryArgsSchema, HistorySchema,
                      LeaveSchema, MemberExportSchema, MemberListArgsSchema, MemberPageSchema, MemberSchema,
                      ProfileUpdateSchema, ReasonSchema, ReconfirmSchema, RegionPageSchema, RegionSchema,
                      RegionStaffCreateSchema, RegionStaffListArgsSchema, RegionStaffPageSchema, RegionStaffSchema, RegionUpdateSchema,
                      RolesSchema, SignInAddressesSchema, SignInResultSchema, SignInSchema, SignUpResultSchema,
                      SignUpSchema,
                      SnapshotSchema, StaffCreateSchema, StaffListArgsSchema, StaffNamesArgsSchema, StaffNamesSchema,
                      StaffPageSchema, StaffSchema, StaffUpdateSchema)

regions = Blueprint("regions", __name__, url_prefix="/v1/regions",
                    description="Regions: the regional GP bodies that own everything else")


def _region_out(doc: dict) -> dict:
    return {"id": doc["_id"], **doc}


@regions.post("")
@allow("platform-admin")
@regions.arguments(RegionSchema)
@idempotent
@regions.response(201, RegionSchema)
def create_region(body):
    """Register a region (platform-admin)."""
    require("platform-admin")
    region = domain.Region(id=body["id"], name=body["name"], country=body["country"], kind=body["kind"],
                           municipalities=body["municipalities"], mandate_policy=body["mandate_policy"],
                           unicode_email_local_parts=body["unicode_email_local_parts"])
    doc = handlers.handle(domain.RegisterRegion(region), ctx().db, g.traceparent)
    return _region_out(doc), 201, {"ETag": etag(doc["version"]), "Location": f"/v1/regions/{region.id}"}


@regions.get("")
@allow(*REGION_ROLES, PORTAL)
@regions.arguments(PageArgsSchema, location="query")
@regions.response(200, RegionPageSchema)
def list_regions(args):
    """List regions: all of them for a platform-admin and the portal, one's own region otherwise."""
    p = require()
    query = {} if p.is_platform_admin or p.is_portal else {"_id": p.region or ""}
    docs, next_url = paginate(ctx().db.regions, query, limit=args["limit"], after=args["after"])
    return {"items": [_region_out(d) for d in docs], "next": next_url}


@regions.get("/<region_id>")
@allow(*REGION_ROLES, PORTAL)
@regions.response(200, RegionSchema)
def get_region(region_id):
    """Get a region (anyone with a token for it, and the portal for its public pages)."""
    require(region=region_id)
    doc = RegionRepository(ctx().db).get_doc(region_id)
    return _region_out(doc), 200, {"ETag": etag(doc["version"])}


@regions.patch("/<region_id>")
@allow("region-admin")
@regions.arguments(RegionUpdateSchema)
@regions.response(200, RegionSchema)
def update_region(body, region_id):
    """Update a region's name, kind, municipalities or mandate policy (platform-admin or region-admin).

    A policy change is a new policy version (votes already open keep theirs). Removing a municipality
    that members' practices lie in answers 409 listing them unless ``confirm_affected`` is true."""
    require("region-admin", region=region_id)
    version = conditional_version(RegionRepository(ctx().db).get_doc(region_id)["version"])
    confirm = body.pop("confirm_affected", False)
    doc = handlers.handle(domain.UpdateRegion(region_id, version, body, confirm_affected=confirm), ctx().db,
                          g.traceparent)
    return _region_out(doc), 200, {"ETag": etag(doc["version"])}


@regions.get("/<region_id>/history")
@allow("region-admin")
@regions.response(200, HistorySchema)
def region_history(region_id):
    """The region's events, oldest first."""
    require("region-admin", region=region_id)
    return {"items": RegionRepository(ctx().db).history(region_id)}


# ============================================================================================
# Members
# ============================================================================================
members = Blueprint("members", __name__, url_prefix="/v1/regions/<region_id>/members",
                    description="GP enrolment: public sign-up, approval, roles, capacity, leaving, erasure")


def _reverify_months(region_id: str) -> int:
    return RegionRepository(ctx().db).get(region_id)[0].mandate_policy.reverify_months


def _member_out(doc: dict, months: int | None = None) -> dict:
    out = {k: v for k, v in doc.items() if not k.startswith("_") and k not in INTERNAL_FIELDS
           and k != "reverify_notified_for"}
    out["id"], out["region_id"] = doc["_id"], doc["region"]
    if doc.get("capacity"):
        out["capacity"] = {**doc["capacity"], "since": date.fromisoformat(doc["capacity"]["since"])}
    if doc.get("status") != "erased":
        out.setdefault("email_verified_at", None)  # null until proven, not absent (docs/PORTAL.md)
        member = MemberRepository.to_domain(doc)
        months = months if months is not None else _reverify_months(doc["region"])
        out["verified_at"] = member.effective_verified_at
        out["reverify_due_at"] = member.reverify_due_at(months)
    return out


def _reply(doc: dict, status: int = 200):
    return _member_out(doc), status, {"ETag": etag(doc["version"])}


def _admin(region_id: str) -> Principal:
    return require("region-admin", region=region_id)


def _admin_or_self(region_id: str, member_id: str) -> Principal:
    """A region-admin of the region, or the GP whose own membership this is (token claim ``member``)."""
    p = require("region-admin", "gp", region=region_id)
    if not (p.has("region-admin") or p.is_platform_admin) and p.member != member_id:
        raise Forbidden("a GP may only see and change their own membership")
    return p


def _current_version(region_id: str, member_id: str) -> int | None:
    """The stored version checked against If-Match (404 if absent); see ``conditional_version``."""
    return conditional_version(MemberRepository(ctx().db).get_doc(region_id, member_id)["version"])


@members.before_request
def _before_parsing():
    """Checks that must come before the body is parsed (after the platform's token check).

    Every sign-up attempt counts against the rate limit, valid or not: the form is public.
    A GP acting on someone else's membership is refused before any 422 could tell them more.
    """
    if request.endpoint == "members.sign_up" and request.method == "POST":
        s = ctx().settings
        rate_limit("signup", s.signup_rate_limit, s.signup_rate_window_s)
        return
    member_id = (request.view_args or {}).get("member_id")
    p = principal()
    if member_id and p is not None and not (p.has("region-admin") or p.is_platform_admin) \
            and p.member != member_id:
        raise Forbidden("a GP may only see and change their own membership")


def _sign_up_caller(region_id: str) -> str:
    """``staff`` (a region-admin of the region, or a platform-admin), ``portal`` (its service
    token) or ``public`` (no token, or one that may not list the region's members)."""
    p = principal()
    if p is None:
        return "public"
    if p.is_portal:
        return "portal"
    if p.is_platform_admin or (p.has("region-admin") and p.may_act_in(region_id)):
        return "staff"
    return "public"


@members.post("")
@public
@members.arguments(SignUpSchema)
@idempotent
@members.response(202, SignUpResultSchema,
                  description="accepted: the same answer whether or not the address or the registration is "
                              "already enrolled in the region (the e-mail tells the person which)")
@members.alt_response(201, schema=SignUpResultSchema,
                      description="with a region-admin token of the region: the new member's id (Location)")
@members.alt_response(409, description="with a region-admin token of the region: the address or the "
                                       "registration is already enrolled in the region")
@members.alt_response(429, description="too many sign-ups from this address; see Retry-After")
def sign_up(body, region_id):
    """Sign up as a GP of the region (public, no token; rate-limited per client address).

    Without a token the answer is always 202 ``{"status": "accepted"}``, with no id: whether the
    address (or the registration) was new or already enrolled must not show. A new member gets
    an e-mail asking to confirm the address by signing in to the portal; an enrolled one an
    e-mail saying someone tried to sign up with it (at most one an hour), and nothing about
    their membership changes. The portal's token also gets ``outcome`` (``created`` or
    ``enrolled``; it mails its own confirmation link and hides the outcome). A region-admin of
    the region gets 201 with the member's id, or 409 for a duplicate (no e-mail: staff tell the
    person to sign in, which confirms the address)."""
    caller = _sign_up_caller(region_id)
    doc = handlers.handle(domain.SignUp(region_id, body, caller=caller), ctx().db, g.traceparent)
    if caller == "staff":
        return ({"id": doc["_id"], "status": doc["status"]}, 201,
                {"Location": f"/v1/regions/{region_id}/members/{doc['_id']}", "ETag": etag(doc["version"])})
    out = {"status": "accepted"}
    if caller == "portal":
        out["outcome"] = "created" if doc is not None else "enrolled"
    return out, 202


@members.get("")
@allow("region-admin")
@members.arguments(MemberListArgsSchema, location="query")
@members.response(200, MemberPageSchema)
def list_members(args, region_id):
    """List the region's members (region-admin), filtered and in a stable order."""
    _admin(region_id)
    municipality = args.get("municipality")
    if municipality:
        region, _ = RegionRepository(ctx().db).get(region_id)
        municipality = region.canonical_municipality(municipality) or municipality
    query = MemberRepository.list_query(region_id, status=args.get("status"), role=args.get("role"),
                                        municipality=municipality, capacity=args.get("capacity"), q=args.get("q"),
                                        email_verified=args.get("email_verified"), stale=args.get("stale"),
                                        now=datetime.now(timezone.utc),
                                        confirm_days=ctx().settings.signup_confirm_days)
    months = _reverify_months(region_id)
    if args.get("ids"):
        # Named members (a history's actors, the notifications log): whatever their status.
        query = {"region": region_id, "_id": {"$in": sorted(set(args["ids"]))}}
        if args.get("status"):
            query["status"] = args["status"]
    elif args.get("reverify_due") is not None:
        # The staff list of registrations to re-confirm.
        due = MemberRepository.reverify_due_query(datetime.now(timezone.utc), months, args["reverify_due"])
        query = {"$and": [query, due]}
    if args.get("outside_region") is not None and not args.get("ids"):
        # Flagged to staff, never silently dropped: a practice outside the region's municipalities.
        inside = RegionRepository(ctx().db).get_doc(region_id)["municipalities"]
        where = {"$nin" if args["outside_region"] else "$in": inside}
        query = {"$and": [query, {"practice.municipality": where}]}
    docs, next_url = paginate(ctx().db.members, query, limit=args["limit"], after=args["after"],
                              projection=INTERNAL_FIELDS)
    return {"items": [_member_out(d, months) for d in docs], "next": next_url}


@members.get("/<member_id>")
@allow("region-admin", "gp")
@members.response(200, MemberSchema)
def get_member(region_id, member_id):
    """A member (region-admin, or the GP themself); a tombstone after erasure."""
    _admin_or_self(region_id, member_id)
    return _reply(MemberRepository(ctx().db).get_doc(region_id, member_id))


@members.patch("/<member_id>")
@allow("region-admin", "gp")
@members.arguments(ProfileUpdateSchema)
@members.response(200, MemberSchema)
def update_profile(body, region_id, member_id):
    """Update names, email, language, category or practice (the GP themself, or a region-admin)."""
    _admin_or_self(region_id, member_id)
    version = _current_version(region_id, member_id)
    cmd = domain.UpdateProfile(region_id, member_id, version, changes=body)
    return _reply(handlers.handle(cmd, ctx().db, g.traceparent))


@members.delete("/<member_id>")
@allow("region-admin", "gp")
@members.response(200, MemberSchema)
def erase_member(region_id, member_id):
    """GDPR erasure (region-admin, or the GP themself): only a tombstone remains."""
    _admin_or_self(region_id, member_id)
    version = _current_version(region_id, member_id)
    return _reply(handlers.handle(domain.EraseMember(region_id, member_id, version), ctx().db, g.traceparent))


def _transition(region_id: str, member_id: str, command, **args):
    version = _current_version(region_id, member_id)
    return _reply(handlers.handle(command(region_id, member_id, version, **args), ctx().db, g.traceparent))


@members.post("/<member_id>/approve")
@allow("region-admin")
@idempotent
@members.response(200, MemberSchema)
def approve_member(region_id, member_id):
    """Approve a pending sign-up (region-admin): the GP becomes an active member."""
    _admin(region_id)
    return _transition(region_id, member_id, domain.ApproveMember)


@members.post("/<member_id>/reject")
@allow("region-admin")
@members.arguments(ReasonSchema)
@idempotent
@members.response(200, MemberSchema)
def reject_member(body, region_id, member_id):
    """Reject a pending sign-up, with a reason (region-admin)."""
    _admin(region_id)
    return _transition(region_id, member_id, domain.RejectMember, reason=body["reason"])


@members.post("/<member_id>/suspend")
@allow("region-admin")
@members.arguments(ReasonSchema)
@idempotent
@members.response(200, MemberSchema)
def suspend_member(body, region_id, member_id):
    """Suspend an active member, with a reason (region-admin)."""
    _admin(region_id)
    return _transition(region_id, member_id, domain.SuspendMember, reason=body["reason"])


@members.post("/<member_id>/reinstate")
@allow("region-admin")
@idempotent
@members.response(200, MemberSchema)
def reinstate_member(region_id, member_id):
    """Reinstate a suspended member (region-admin)."""
    _admin(region_id)
    return _transition(region_id, member_id, domain.ReinstateMember)


@members.post("/<member_id>/leave")
@allow("region-admin", "gp")
@members.arguments(LeaveSchema)
@idempotent
@members.response(200, MemberSchema)
def leave_region(body, region_id, member_id):
    """End the membership (the GP themself, or a region-admin on their behalf)."""
    _admin_or_self(region_id, member_id)
    return _transition(region_id, member_id, domain.LeaveRegion, reason=body.get("reason"))


@members.post("/<member_id>/reconfirm")
@allow("region-admin", "gp")
@members.arguments(ReconfirmSchema)
@idempotent
@members.response(200, MemberSchema)
def reconfirm(body, region_id, member_id):
    """Re-confirm the registration is still valid (the GP themself, or a region-admin), optionally
    with a corrected registration (the sign-up's checks apply): ``verified_at`` becomes now and
    ``member.reverified`` is emitted. Active and suspended members only (409 otherwise)."""
    _admin_or_self(region_id, member_id)
    return _transition(region_id, member_id, domain.Reconfirm, changes=body)


@members.put("/<member_id>/roles")
@allow("region-admin")
@members.arguments(RolesSchema)
@members.response(200, MemberSchema)
def set_roles(body, region_id, member_id):
    """Set the member's roles in the body (region-admin); at most one chair per region."""
    _admin(region_id)
    return _transition(region_id, member_id, domain.SetRoles, roles=tuple(body["roles"]))


@members.put("/<member_id>/capacity")
@allow("region-admin", "gp")
@members.arguments(CapacitySchema)
@members.response(200, MemberSchema)
def set_capacity(body, region_id, member_id):
    """Set the practice's capacity for new patients (the GP themself, or a region-admin)."""
    _admin_or_self(region_id, member_id)
    new = domain.Capacity(body["status"], body.get("since") or date.today(), body.get("note"))
    return _transition(region_id, member_id, domain.SetCapacity, capacity=new)


@members.get("/<member_id>/export")
@allow("region-admin", "gp")
@members.response(200, MemberExportSchema)
def export_member(region_id, member_id):
    """GDPR access and portability (the GP themself, or a region-admin): the membership and every
    event about it, as JSON."""
    _admin_or_self(region_id, member_id)
    repo = MemberRepository(ctx().db)
    doc = repo.get_doc(region_id, member_id)
    return {"exported_at": datetime.now(timezone.utc), "member": _member_out(doc),
            "history": repo.history(region_id, member_id)}


@members.get("/<member_id>/history")
@allow("region-admin", "gp")
@members.response(200, HistorySchema)
def member_history(region_id, member_id):
    """The member's events, oldest first (region-admin, or the GP themself)."""
    _admin_or_self(region_id, member_id)
    return {"items": MemberRepository(ctx().db).history(region_id, member_id)}


# ============================================================================================
# Capacity overview
# ============================================================================================
capacity = Blueprint("capacity", __name__, url_prefix="/v1/regions/<region_id>/capacity",
                     description="Practice capacity per municipality: who still accepts new patients")


@capacity.get("")
@allow("region-admin")
@capacity.response(200, CapacityOverviewSchema)
def capacity_overview(region_id):
    """Per municipality, active members' practices by capacity and the share closed (region-admin)."""
    _admin(region_id)
    region, _ = RegionRepository(ctx().db).get(region_id)
    counts = MemberRepository(ctx().db).capacity_counts(region_id)
    return {"region_id": region_id, **domain.capacity_overview(region.municipalities, counts)}


@capacity.post("/snapshots")
@allow("region-admin")
@capacity.response(201, SnapshotSchema)
@capacity.alt_response(200, schema=SnapshotSchema, description="today's snapshot existed and was replaced")
def take_capacity_snapshot(region_id):
    """Record today's (UTC) capacity snapshot now (region-admin); the worker takes one every day.
    Idempotent per day: a second one replaces that day's counts (200), never adds a day."""
    _admin(region_id)
    snapshot, created = take_snapshot(ctx().db, region_id, datetime.now(timezone.utc).date())
    return snapshot, 201 if created else 200


@capacity.get("/history")
@allow("region-admin")
@capacity.arguments(HistoryArgsSchema, location="query")
@capacity.response(200, CapacityHistorySchema)
def capacity_history(args, region_id):
    """Daily snapshots per municipality from ``from`` to ``to``, oldest first (region-admin):
    default the last 90 days, at most 400."""
    _admin(region_id)
    RegionRepository(ctx().db).get_doc(region_id)
    start, end = domain.history_range(args.get("from_"), args.get("to"), datetime.now(timezone.utc).date())
    return {"region_id": region_id, "from_": start.isoformat(), "to": end.isoformat(),
            "days": snapshot_history(ctx().db, region_id, start, end)}


# ============================================================================================
# Staff accounts
# ============================================================================================
staff = Blueprint("staff", __name__, url_prefix="/v1/staff",
                  description="Staff accounts: platform admins and the admins of each region (platform-admin)")


def _staff_reply(doc: dict, status: int = 200, **headers):
    out = {k: v for k, v in doc.items() if k not in STAFF_INTERNAL_FIELDS}
    out["id"] = out.pop("_id")
    for key in ("invited_at", "activated_at", "revoked_at"):
        out.setdefault(key, None)
    return out, status, {"ETag": etag(doc["version"]), **headers}


@staff.post("")
@allow("platform-admin")
@staff.arguments(StaffCreateSchema)
@idempotent
@staff.response(201, StaffSchema)
def invite_staff(body):
    """Invite a staff account (platform-admin); an address already on an account is a 409."""
    require("platform-admin")
    doc = handlers.handle(domain.InviteStaff(body), ctx().db, g.traceparent)
    return _staff_reply(doc, 201, Location=f"/v1/staff/{doc['_id']}")


@staff.get("")
@allow("platform-admin")
@staff.arguments(StaffListArgsSchema, location="query")
@staff.response(200, StaffPageSchema)
def list_staff(args):
    """Staff accounts, filtered, in a stable order (platform-admin)."""
    require("platform-admin")
    query = StaffRepository.list_query(status=args.get("status"), region=args.get("region"), q=args.get("q"))
    docs, next_url = paginate(ctx().db.staff, query, limit=args["limit"], after=args["after"],
                              projection=STAFF_INTERNAL_FIELDS)
    return {"items": [_staff_reply(d)[0] for d in docs], "next": next_url}


@staff.get("/<staff_id>")
@allow("platform-admin")
@staff.response(200, StaffSchema)
def get_staff(staff_id):
    """One staff account (platform-admin)."""
    require("platform-admin")
    return _staff_reply(StaffRepository(ctx().db).get_doc(staff_id))


@staff.patch("/<staff_id>")
@allow("platform-admin")
@staff.arguments(StaffUpdateSchema)
@staff.response(200, StaffSchema)
def update_staff(body, staff_id):
    """Change name, language, ``platform_admin`` or ``admin_of`` (platform-admin); If-Match guards
    against overwriting someone else's change (412)."""
    require("platform-admin")
    version = conditional_version(StaffRepository(ctx().db).get_doc(staff_id)["version"])
    return _staff_reply(handlers.handle(domain.UpdateStaff(staff_id, version, body), ctx().db, g.traceparent))


@staff.post("/<staff_id>/revoke")
@allow("platform-admin")
@idempotent
@staff.response(200, StaffSchema)
def revoke_staff(staff_id):
    """Revoke an account (platform-admin): it can no longer sign in to the console."""
    require("platform-admin")
    version = conditional_version(StaffRepository(ctx().db).get_doc(staff_id)["version"])
    return _staff_reply(handlers.handle(domain.RevokeStaff(staff_id, version), ctx().db, g.traceparent))


region_staff = Blueprint("region_staff", __name__, url_prefix="/v1/regions/<region_id>/staff",
                         description="The admins of one region (region-admin of that region)")


def _region_staff_out(doc: dict, region_id: str) -> dict:
    """What a region may know of an account: not the other regions it administers."""
    return {"id": doc["_id"], "region_id": region_id, "email": doc["email"], "name": doc["name"],
            "language": doc["language"], "status": doc["status"], "invited_at": doc.get("invited_at"),
            "activated_at": doc.get("activated_at")}


@region_staff.get("")
@allow("region-admin")
@region_staff.arguments(RegionStaffListArgsSchema, location="query")
@region_staff.response(200, RegionStaffPageSchema)
def list_region_staff(args, region_id):
    """The region's admins, invited and active (region-admin of the region)."""
    _admin(region_id)
    RegionRepository(ctx().db).get_doc(region_id)
    query = {"admin_of": region_id, "status": args.get("status") or {"$in": ["invited", "active"]}}
    docs, next_url = paginate(ctx().db.staff, query, limit=args["limit"], after=args["after"],
                              projection=STAFF_INTERNAL_FIELDS)
    return {"items": [_region_staff_out(d, region_id) for d in docs], "next": next_url}


@region_staff.get("/names")
@allow("region-admin")
@region_staff.arguments(StaffNamesArgsSchema, location="query")
@region_staff.response(200, StaffNamesSchema)
def region_staff_names(args, region_id):
    """The names of staff ids as the region's histories show them (region-admin of the region):
    of the accounts that administer or administered the region and of platform admins, who may
    act in any region; any other id is left out, known or not. Names only: no addresses, no
    other regions. ``?ids=stf_a,stf_b`` (at most 100)."""
    _admin(region_id)
    RegionRepository(ctx().db).get_doc(region_id)
    return {"items": StaffRepository(ctx().db).names_for_region(region_id, args["ids"])}


@region_staff.post("")
@allow("region-admin")
@region_staff.arguments(RegionStaffCreateSchema)
@idempotent
@region_staff.response(201, RegionStaffSchema)
@region_staff.alt_response(200, schema=RegionStaffSchema,
                           description="the address already had an account: it now administers the region too")
def invite_region_staff(body, region_id):
    """Invite a region-admin of the region (region-admin of it); an existing account gains the region
    (200), keeping its name and language."""
    _admin(region_id)
    doc, created = handlers.handle(domain.InviteRegionAdmin(region_id, body), ctx().db, g.traceparent)
    headers = {"Location": f"/v1/regions/{region_id}/staff/{doc['_id']}"}
    return _region_staff_out(doc, region_id), 201 if created else 200, headers


@region_staff.delete("/<staff_id>")
@allow("region-admin")
@region_staff.response(204)
def remove_region_staff(region_id, staff_id):
    """The account no longer administers the region (region-admin of it); an account left without
    any role is revoked."""
    _admin(region_id)
    handlers.handle(domain.RemoveRegionAdmin(region_id, staff_id), ctx().db, g.traceparent)
    return "", 204


# ============================================================================================
# Sign-ins (the portal)
# ============================================================================================
sign_ins = Blueprint("sign_ins", __name__, url_prefix="/v1/sign-ins",
                     description="The portal reports a used sign-in link: the address is proven")
sign_in_addresses = Blueprint("sign_in_addresses", __name__, url_prefix="/v1/sign-in-addresses",
                              description="The portal asks where a sign-in link for a typed address may go")


@sign_in_addresses.post("")
@allow(PORTAL)
@sign_in_addresses.arguments(SignInSchema)
@sign_in_addresses.response(200, SignInAddressesSchema)
def find_sign_in_addresses(body):
    """The stored addresses of the accounts a typed address names (portal only): the portal mails
    a sign-in link to each of them and never to the address as typed. Matching follows the rule
    of README "Security": the domain as IDNA A-labels, only ASCII letters case-insensitive, so
    ``ß`` never matches ``ss``. Nothing changes; an unknown address gets an empty list."""
    p = require(PORTAL)
    if not p.is_portal:
        raise Forbidden("only the portal asks for sign-in addresses")
    return {"addresses": handlers.sign_in_addresses(body["email"], handlers.Repos(ctx().db))}


@sign_ins.post("")
@allow(PORTAL)
@sign_ins.arguments(SignInSchema)
@sign_ins.response(200, SignInResultSchema)
def sign_in(body):
    """A sign-in link sent to this address was used (portal only): every membership with the address
    that has no ``email_verified_at`` gets it now; the non-erased memberships are returned, and the
    non-revoked staff account with the address (an invited one is active from now on)."""
    p = require(PORTAL)
    if not p.is_portal:
        raise Forbidden("only the portal reports sign-ins")
    email, docs, account = handlers.handle(domain.SignIn(body["email"]), ctx().db, g.traceparent)
    names = {d["_id"]: d.get("name") for d in ctx().db.regions.find(
        {"_id": {"$in": sorted({d["region"] for d in docs})}}, {"name": 1})}
    return {"email": email, "memberships": [
        {"region_id": d["region"], "region_name": names.get(d["region"]) or d["region"], "member_id": d["_id"],
         "status": d["status"], "roles": list(d.get("roles") or []), "email_verified_at": d.get("email_verified_at")}
        for d in docs],
        "staff": None if account is None else {
            "id": account["_id"], "name": account["name"], "language": account["language"],
            "platform_admin": bool(account.get("platform_admin")), "admin_of": list(account.get("admin_of") or []),
            "status": account["status"]}}

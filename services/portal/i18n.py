"""Languages: nl (default), fr, en. The person's own choice (session, then a long-lived
cookie that survives sign-out), then ``Accept-Language``. Also the date filters."""
from __future__ import annotations

from datetime import date, datetime, timezone

from flask import Flask, request, session
from jinja2 import pass_context

LANGUAGES = ("nl", "fr", "en")
COOKIE = "hecht_lang"
# French puts a narrow no-break space (U+202F) before : ; ? and ! (the catalogue's French
# strings carry it; ``punct`` adds it where a template joins a message and its value).
NARROW_NBSP = "\u202f"


def select_locale() -> str:
    chosen = session.get("lang") or request.cookies.get(COOKIE)
    if chosen in LANGUAGES:
        return chosen
    return request.accept_languages.best_match(LANGUAGES) or "nl"


def moment_of(value, tz=timezone.utc) -> datetime | None:
    """An ISO moment (an API's ``…Z``, a ``datetime-local`` field) as an aware datetime; one
    without a zone is taken in ``tz``. None for empty or unreadable values."""
    if not value:
        return None
    try:
        v = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return v if v.tzinfo else v.replace(tzinfo=tz)


def _parse(value):
    if isinstance(value, (date, datetime)) or not value:
        return value
    try:
        if "T" in str(value):
            return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        return date.fromisoformat(str(value))
    except ValueError:
        return None


def punct(mark: str = ":") -> str:
    """A colon, semicolon, question or exclamation mark that a template puts after a translated
    label ("Mandate vote: Open"): in French preceded by a narrow no-break space."""
    from flask_babel import get_locale
    return (NARROW_NBSP + mark) if str(get_locale() or "") == "fr" else mark


def install(app: Flask) -> None:
    from flask_babel import format_date, format_datetime, get_locale

    from .labels import label

    def day(value):
        v = _parse(value)
        if v is None or v == "":
            return value or ""
        return format_date(v.date() if isinstance(v, datetime) else v, "long")

    def moment(value):
        v = _parse(value)
        if not isinstance(v, datetime):
            return day(value)
        return format_datetime(v, "d MMMM y, HH:mm")

    def pct(value):
        try:
            return f"{round(float(value) * 100)}%"
        except (TypeError, ValueError):
            return ""

    @pass_context
    def label_filter(_ctx, value, kind):
        # pass_context: Jinja must not fold ``"open"|label("capacity")`` into a constant at
        # compile time, in the language of whichever request compiled the template first.
        return label(value, kind)

    app.jinja_env.filters.update(day=day, moment=moment, pct=pct, label=label_filter)
    app.jinja_env.globals["punct"] = punct

    @app.context_processor
    def _languages():
        return {"languages": LANGUAGES, "current_language": str(get_locale() or "nl")}

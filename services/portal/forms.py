"""Flask-WTF forms: CSRF on every POST. Field rules live in the services; the forms only
carry the values (and the few checks that need no service, e.g. the erase confirmation)."""
from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import (BooleanField, DateField, HiddenField, RadioField, SelectField, StringField,
                     TextAreaField)
from wtforms.fields import EmailField
from wtforms.validators import DataRequired, Length, Optional

LANGUAGE_CHOICES = [("nl", "Nederlands"), ("fr", "Français"), ("en", "English")]


def category_choices():
    return [("practice-owner", _l("Practice owner")), ("employed", _l("Employed GP")),
            ("locum", _l("Locum")), ("gp-in-training", _l("GP in training"))]


class EmptyForm(FlaskForm):
    """A CSRF token and nothing else (sign-out, the sign-in button, …)."""


class EmailForm(FlaskForm):
    email = EmailField(_l("E-mail address"), validators=[DataRequired(), Length(3, 254)],
                       render_kw={"autocomplete": "email"})
    next = HiddenField()


class SignUpForm(FlaskForm):
    given_name = StringField(_l("Given name"), render_kw={"autocomplete": "given-name"})
    family_name = StringField(_l("Family name"), render_kw={"autocomplete": "family-name"})
    email = EmailField(_l("E-mail address"), render_kw={"autocomplete": "email"})
    language = SelectField(_l("Language for e-mails"), choices=LANGUAGE_CHOICES)
    category = SelectField(_l("Category"), choices=[])
    registration_scheme = SelectField(_l("Registration"), choices=[])
    registration_number = StringField(_l("Registration number"))
    practice_name = StringField(_l("Practice name"), render_kw={"autocomplete": "organization"})
    practice_postcode = StringField(_l("Postcode"), render_kw={"autocomplete": "postal-code"})
    practice_municipality = SelectField(_l("Municipality"), choices=[])


class ProfileForm(FlaskForm):
    given_name = StringField(_l("Given name"), render_kw={"autocomplete": "given-name"})
    family_name = StringField(_l("Family name"), render_kw={"autocomplete": "family-name"})
    language = SelectField(_l("Language for e-mails"), choices=LANGUAGE_CHOICES)
    category = SelectField(_l("Category"), choices=[])
    practice_name = StringField(_l("Practice name"), render_kw={"autocomplete": "organization"})
    practice_postcode = StringField(_l("Postcode"), render_kw={"autocomplete": "postal-code"})
    practice_municipality = SelectField(_l("Municipality"), choices=[])
    etag = HiddenField()


class CapacityForm(FlaskForm):
    status = RadioField(_l("Capacity"), choices=[])
    since = DateField(_l("Since"), validators=[Optional()])
    note = TextAreaField(_l("Note (optional)"), validators=[Optional(), Length(max=500)])
    etag = HiddenField()


class VoteForm(FlaskForm):
    choice = RadioField(_l("Your vote"), choices=[])


class LeaveForm(FlaskForm):
    reason = TextAreaField(_l("Reason (optional)"), validators=[Optional(), Length(max=500)])


class EraseForm(FlaskForm):
    confirm = BooleanField(_l("I understand that my personal data in this region will be erased and "
                              "that this cannot be undone."), validators=[DataRequired()])


class LanguageForm(FlaskForm):
    lang = SelectField(_l("Language"), choices=LANGUAGE_CHOICES)
    next = HiddenField()


class ChooseRegionForm(FlaskForm):
    region = HiddenField()
    next = HiddenField()

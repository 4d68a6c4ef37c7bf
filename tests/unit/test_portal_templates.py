"""The portal's templates never rebind ``_``, the translation function (issue 22 item 4):
``{% set _ = pargs.update(...) %}`` made every later ``_("…")`` on the page fail (a 500 on
``/admin/<r>/integrators?status=…``). Parsed with Jinja itself, so comments do not count.
No I/O beyond reading the templates."""
from __future__ import annotations

from pathlib import Path

import pytest
from jinja2 import Environment, nodes

TEMPLATES = Path(__file__).resolve().parents[2] / "services" / "portal" / "templates"


def _bound_names(tree) -> set[str]:
    """Every name a template assigns: set, for, with, macro arguments."""
    return {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}


@pytest.mark.parametrize("path", sorted(TEMPLATES.rglob("*.html")), ids=lambda p: str(p.relative_to(TEMPLATES)))
def test_no_template_rebinds_the_translation_function(path):
    env = Environment(extensions=["jinja2.ext.i18n"])
    tree = env.parse(path.read_text(encoding="utf-8"))
    assert "_" not in _bound_names(tree), f"{path.name} assigns `_` (use another name, or build the value)"

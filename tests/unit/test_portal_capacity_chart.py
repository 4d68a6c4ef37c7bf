"""The console's capacity chart (services/portal/admin.py): the history's days per municipality,
the SVG's coordinates, and CSV cells that a spreadsheet cannot run. No I/O."""
from __future__ import annotations

from services.portal.admin import H, W, _csv_cell, chart, series


def _history():
    return {"days": [
        {"day": "2026-12-02", "municipalities": [{"municipality": "Gent", "open": 2, "limited": 1, "closed": 0,
                                                  "unknown": 1}]},
        {"day": "2026-12-01", "municipalities": [{"municipality": "Gent", "open": 1, "limited": 0, "closed": 3,
                                                  "unknown": 0},
                                                 {"municipality": "Aalter", "open": 1, "limited": 0, "closed": 0,
                                                  "unknown": 0}]},
        {"day": "not a day", "municipalities": [{"municipality": "Gent", "open": 9}]},
    ]}


def test_series_orders_days_and_fills_missing_ones_with_zero():
    days, towns = series(_history())
    assert days == ["2026-12-01", "2026-12-02"]
    assert list(towns) == ["Aalter", "Gent"]
    assert [p["closed"] for p in towns["Gent"]] == [3, 0]
    assert towns["Aalter"][1] == {"day": "2026-12-02", "open": 0, "limited": 0, "closed": 0, "unknown": 0}


def test_chart_coordinates_stay_inside_the_box():
    _days, towns = series(_history())
    c = chart(towns["Gent"])
    for line in c["lines"].values():
        for point in line.split():
            x, y = (float(v) for v in point.split(","))
            assert 0 <= x <= W and 0 <= y <= H
    assert c["yticks"][-1][0] == 3 and c["first"] == "2026-12-01" and c["last"] == "2026-12-02"
    assert len(c["dots"]) == 2                      # short series: dots as well as lines
    assert chart([])["lines"] == {"open": "", "limited": "", "closed": ""}


def test_csv_cells_never_start_a_formula():
    assert _csv_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert _csv_cell("+1") == "'+1" and _csv_cell("@x") == "'@x" and _csv_cell("-2") == "'-2"
    assert _csv_cell("Gent") == "Gent" and _csv_cell(3) == "3"

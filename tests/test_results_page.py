"""RESULTS.md's verdicts at a glance agree with the study tables they summarise."""

import re

from conftest import REPO

RESULTS = (REPO / "RESULTS.md").read_text()


def _glance_rows():
    section = RESULTS.split("**At a glance**", 1)[1].split("\n### ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ") and "---" not in line][
        1:
    ]


def _table_rows(heading):
    section = RESULTS.split(f"### {heading}", 1)[1].split("\n### ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) > 2 and (m := re.match(r"([\d.]+)% ±", cells[2])):
            rows[cells[0]] = float(m.group(1))
    return rows


def test_every_figure_quoted_at_a_glance_is_in_a_study_table():
    tabled = {round(float(x), 1) for x in re.findall(r"\| ([\d.]+)% ±", RESULTS)}
    for row in _glance_rows():
        here = row.strip("|").split("|")[2]
        # accuracies: "44.6%", or both ends of "44.6-45.9%" (point differences are not)
        for figure in re.findall(r"(\d+\.\d)(?=%|-[\d.]+%)", here):
            assert round(float(figure), 1) in tabled, (figure, row)


def test_the_augmentation_verdict_holds_for_every_composition():
    rows = _table_rows("Augmentation composition")
    trained = {k: v for k, v in rows.items() if not k.startswith("random init")}
    row = next(r for r in _glance_rows() if r.startswith("| augmentation composition"))
    best, bound = (
        float(x) for x in re.search(r"crop \+ colour ([\d.]+)%.*?([\d.]+)% or less", row).groups()
    )
    assert round(trained["crop + colour"], 1) == best
    assert max(trained.values()) == trained["crop + colour"]
    # A composition above the bound is an exception the verdict must quote.
    for name, value in trained.items():
        if name != "crop + colour" and round(value, 1) > bound:
            assert f"{round(value, 1)}%" in row, (name, value, row)

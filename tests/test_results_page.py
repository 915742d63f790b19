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


def _search_rows():
    section = RESULTS.split("**The search**", 1)[1].split("\nCommands", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
        if len(cells) > 2 and (m := re.match(r"([\d.]+)%", cells[1])):
            rows[cells[0]] = (float(m.group(1)), float(cells[2].rstrip("%")))
    return rows


def test_the_time_to_accuracy_findings_agree_with_their_table():
    """The point differences the text quotes are the search table's."""
    rows = _search_rows()
    base = rows["base (study_cpu)"]

    def gain(label, metric):
        return f"{rows[label][metric] - base[metric]:.2f}"

    findings = RESULTS.split("What the search found", 1)[1].split("\n\n", 1)[0]
    assert f"+{gain('views 24 px (`--view_size=24`)', 0)} points linear" in findings
    assert f"+{gain('temperature 0.2', 0)} linear, +{gain('temperature 0.2', 1)} kNN" in findings
    assert f"is {gain('batch 128 (lr 0.5 by linear scaling)', 0)[1:]} points below" in findings
    recipe = "recipe: temperature 0.2 + views 24 px"
    assert f"+{gain(recipe, 0)} points linear and +{gain(recipe, 1)} kNN" in findings

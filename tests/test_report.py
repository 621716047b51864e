"""The report: its Python runs through Jupyter without Quarto, its structure is consistent,
and Quarto renders it to HTML and PDF where Quarto is installed.

The execution test runs every code cell and every inline `` `{python} expr` `` of
``report/index.qmd`` (with its includes) on the smoke profile and phantom data, the way
Quarto would (kernel ``python3``, working directory = project root), via :mod:`qmd`.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from pathlib import Path
from matplotlib.figure import Figure

import qmd
from conftest import REPO_ROOT

REPORT_DIR = REPO_ROOT / "report"
REPORT = REPORT_DIR / "index.qmd"
BIB = REPORT_DIR / "references.bib"


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def report_env(task_phantoms, task_cache) -> dict[str, str]:
    """Environment of the report's kernel: smoke profile, phantom data, the session cache.

    ``PNEUMO_DATA`` is always set, so a real ``data/chest_xray`` in the checkout is never
    picked up; the cache is the task tests', so the report is a cache hit after them.
    """
    phantoms, cache = task_phantoms, task_cache
    return {"PNEUMO_PROFILE": "smoke", "PNEUMO_DATA": str(phantoms), "PNEUMO_CACHE": str(cache)}


@pytest.fixture(scope="session")
def document() -> qmd.Document:
    return qmd.expand(REPORT)


@pytest.fixture(scope="session")
def executed(report_env, document, tmp_path_factory):
    """The report executed once per session; the notebook is kept next to the cache for debugging."""
    nb = qmd.to_notebook(document)
    try:
        qmd.execute(nb, env=report_env, timeout=900)
    finally:
        import nbformat

        nbformat.write(nb, str(tmp_path_factory.mktemp("report-notebook") / "report.ipynb"))
    return nb


def _cells(nb, prefix):
    return {c.metadata["qmd"]["label"]: c for c in nb.cells
            if c.cell_type == "code" and c.metadata.get("qmd", {}).get("label", "").startswith(prefix)}


# -- execution ----------------------------------------------------------------------------------
def test_report_executes_without_quarto(executed, document):
    """Every cell and inline expression ran (qmd.execute raises otherwise), and they all ran."""
    code = [c for c in executed.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code)
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert len(qmd.inline_expressions(document)) > 50  # the prose is live


def test_every_figure_cell_shows_one_figure(executed):
    figures = _cells(executed, "fig-")
    assert len(figures) >= 10
    for label, cell in figures.items():
        images = [o for o in cell.outputs if "image/png" in o.get("data", {})]
        assert len(images) == 1, f"{label} displays {len(images)} images"


def _table_lines(text: str) -> list[str]:
    """The lines of a simple table as :func:`pneumo.report.md_table` writes it, checked."""
    lines = text.rstrip("\n").split("\n")
    assert len(lines) >= 3 and set(lines[1]) <= {"-", " "} and "-" in lines[1], lines[:2]
    return lines


def _cells_of(line: str, rule: str) -> list[str]:
    """A simple-table row split at the column spans of its dash rule."""
    spans = [(m.start(), m.end()) for m in re.finditer(r"-+", rule)]
    return [line[a:b].strip() for a, b in spans]


def test_every_table_cell_shows_one_table(executed):
    tables = _cells(executed, "tbl-")
    assert len(tables) >= 8
    for label, cell in tables.items():
        markdown = [o["data"]["text/markdown"] for o in cell.outputs if "text/markdown" in o.get("data", {})]
        assert len(markdown) == 1, f"{label} displays {len(markdown)} markdown outputs"
        lines = _table_lines(markdown[0])
        columns = len(lines[1].split())
        for line in lines[2:]:
            # Every row stays inside the columns of the rule, so no cell spills into the next
            # (a zero-width break takes no column, as pandoc counts).
            line = line.replace("\u200b", "")
            assert len(line) <= len(lines[1]), (label, line)
            gaps = [i for i, ch in enumerate(lines[1]) if ch == " "]
            assert all(line[i:i + 1] in ("", " ") for i in gaps), (label, line)
        assert columns == len(_cells_of(lines[0], lines[1])), label


def test_synthetic_data_is_announced_at_the_top(executed):
    cell = _cells(executed, "synthetic-note")["synthetic-note"]
    text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
    assert "callout-warning" in text and "synthetic" in text and "PNEUMO_DATA" in text
    first_heading = next(i for i, c in enumerate(executed.cells) if c.metadata.get("qmd", {}).get("label") == "intro-numbers")
    assert executed.cells.index(cell) < first_heading


def test_command_line_computes_and_explains_quarto(report_env, executed, monkeypatch, capsys):
    """`python -m pneumo.report` without Quarto: computes (here: finds) everything, exits 0."""
    from pneumo.report import build

    for key, value in report_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    assert build.main(["--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "https://quarto.org/docs/get-started/" in out and "quarto render" in out
    from pneumo.runner import TASK_REGISTRY

    assert all(f"{name}:" in out for name in TASK_REGISTRY)


# -- structure ----------------------------------------------------------------------------------
def test_includes_resolve_and_cover_every_section_file(document):
    included = {p.name for p in document.includes}
    assert {"_intro.qmd", "_binary.qmd", "_multiclass.qmd", "_embeddings.qmd", "_anomaly.qmd",
            "_explain.qmd", "_generalisation.qmd", "_appendix.qmd"} <= included
    orphans = {p.name for p in REPORT_DIR.glob("_*.qmd")} - included
    assert not orphans, f"section files not included by index.qmd: {orphans}"


def test_cross_references_have_targets(document):
    labels = qmd.labels(document)
    missing = [(line.where, ref) for line, ref in qmd.references(document) if ref not in labels]
    assert not missing, f"references without a label: {missing}"
    referenced = {ref for _, ref in qmd.references(document)}
    unreferenced = {l for l in labels if l.startswith(("fig-", "tbl-"))} - referenced
    assert not unreferenced, f"figures/tables never referenced in the text: {unreferenced}"


def test_sections_read_no_other_sections_globals():
    """Each section file computes what it shows itself: every name its code and inline values
    read is defined in that file (or is a builtin), so sections share no globals."""
    import ast
    import builtins

    for path in sorted(REPORT_DIR.glob("*.qmd")):
        # The file's own lines, includes not expanded.
        lines = [qmd.Line(text, path, n) for n, text in enumerate(path.read_text().splitlines(), 1)]
        doc = qmd.Document(path, lines)
        sources = ["\n".join(l.text for l in c.lines if not l.text.lstrip().startswith("#|"))
                   for c in qmd.chunks(doc) if c.kind == "code"]
        sources += [expr for _, expr in qmd.inline_expressions(doc)]
        defined, used = set(dir(builtins)), set()
        for source in sources:
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.Name):
                    (defined if isinstance(node.ctx, ast.Store) else used).add(node.id)
                elif isinstance(node, (ast.Import, ast.ImportFrom)):
                    defined.update((a.asname or a.name).split(".")[0] for a in node.names)
                elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                    defined.add(node.name)
                elif isinstance(node, ast.arg):
                    defined.add(node.arg)
        assert not used - defined, f"{path.name} reads names it does not define: {sorted(used - defined)}"


def test_labels_are_unique(document):
    seen: dict[str, str] = {}
    for line in document.lines:
        m = qmd.LABEL_RE.match(line.text.strip())
        if m:
            assert m.group(1) not in seen, f"label {m.group(1)} at {line.where} and {seen[m.group(1)]}"
            seen[m.group(1)] = line.where


def test_figures_and_tables_have_captions(document):
    for chunk in qmd.chunks(document):
        if chunk.kind != "code":
            continue
        options = [line.text.strip() for line in chunk.lines if line.text.strip().startswith("#|")]
        label = next((qmd.LABEL_RE.match(o).group(1) for o in options if qmd.LABEL_RE.match(o)), "")
        if label.startswith("fig-"):
            assert any(o.startswith("#| fig-cap:") for o in options), label
        if label.startswith("tbl-"):
            assert any(o.startswith("#| tbl-cap:") for o in options), label


def test_citations_are_in_the_bibliography(document):
    keys = qmd.bib_keys(BIB)
    cited = qmd.citations(document)
    assert cited, "the report cites nothing"
    missing = sorted({(line.where, key) for line, key in cited if key not in keys})
    assert not missing, f"citations missing from {BIB.name}: {missing}"


def test_bibliography_entries_are_well_formed():
    text = BIB.read_text(encoding="utf-8")
    assert text.count("{") == text.count("}")
    for key in qmd.bib_keys(BIB):
        entry = text[text.index(key):].split("\n}\n", 1)[0]
        assert re.search(r"\btitle\s*=", entry) and re.search(r"\byear\s*=", entry), key


def test_inline_expressions_are_not_adjacent_and_not_in_yaml():
    for path in [REPORT, *REPORT_DIR.glob("_*.qmd")]:
        text = path.read_text(encoding="utf-8")
        # Two inline spans back to back (`a``b`) would parse as one double-backtick span.
        assert not re.search(r"`\{python\}[^`]*``\{python\}", text), path.name
        if text.startswith("---"):
            front = text.split("---", 2)[1]
            assert "{python}" not in front, f"{path.name}: inline code does not run in YAML"


def test_quarto_project_config():
    config = yaml.safe_load((REPO_ROOT / "_quarto.yml").read_text())
    project = config["project"]
    assert project["render"] == ["report/index.qmd"]
    assert project["output-dir"] == "_output" and project["execute-dir"] == "project"
    assert config["execute"]["echo"] is False
    formats = config["format"]
    assert {"html", "typst"} <= set(formats)
    assert formats["html"]["embed-resources"] is True
    assert formats["typst"]["papersize"] == "a4"
    assert (REPO_ROOT / config["bibliography"]).is_file()


# -- the qmd runner itself ----------------------------------------------------------------------
def test_qmd_expands_includes_and_finds_inline_code(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "main.qmd").write_text("---\ntitle: x\n---\n\n{{< include sub/_a.qmd >}}\n\n"
                                       "```bash\necho `{python} not_evaluated`\n```\n")
    (tmp_path / "sub" / "_a.qmd").write_text("```{python}\n#| label: fig-a\nx = 2\n```\n\n"
                                             "Two is `{python} x`, not ``{python} y``.\n")
    doc = qmd.expand(tmp_path / "main.qmd")
    assert [p.name for p in doc.includes] == ["_a.qmd"]
    assert [(line.where.endswith("_a.qmd:6"), e) for line, e in qmd.inline_expressions(doc)] == [(True, "x")]
    assert qmd.labels(doc) == {"fig-a"}
    (tmp_path / "sub" / "_a.qmd").write_text("{{< include ../main.qmd >}}\n")
    with pytest.raises(qmd.QmdError, match="cycle"):
        qmd.expand(tmp_path / "main.qmd")
    (tmp_path / "main.qmd").write_text("{{< include missing.qmd >}}\n")
    with pytest.raises(FileNotFoundError, match="missing.qmd"):
        qmd.expand(tmp_path / "main.qmd")


def test_qmd_rejects_a_reference_in_a_plain_string(tmp_path):
    (tmp_path / "doc.qmd").write_text("```{python}\nfrom IPython.display import Markdown\n```\n\n"
                                      "Fine: `{python} Markdown('see @fig-x')`.\n\n"
                                      "Broken: `{python} 'see (@fig-x)'`.\n")
    with pytest.raises(qmd.QmdError, match=r"doc.qmd:7.*reference or citation"):
        qmd.run(tmp_path / "doc.qmd", cwd=tmp_path, timeout=60)


def test_qmd_names_the_failing_inline_expression(tmp_path):
    (tmp_path / "doc.qmd").write_text("```{python}\nvalue = 0.5\n```\n\nFine: `{python} str(value)`.\n\n"
                                      "Raw float: `{python} value`.\n")
    with pytest.raises(qmd.QmdError, match=r"doc.qmd:7.*unformatted float"):
        qmd.run(tmp_path / "doc.qmd", cwd=tmp_path, timeout=60)


# -- helpers and figures ------------------------------------------------------------------------
def test_format_helpers():
    from pneumo import report

    row = {"value": 0.98123, "ci_low": 0.97, "ci_high": 0.99}
    assert report.fmt_ci(row) == "0.981 [0.970, 0.990]"
    assert report.fmt_ci({"value": 0.5, "ci_low": float("nan"), "ci_high": 1}) == "0.500 [CI undefined]"
    assert report.pct(0.9321) == "93.2%" and report.count(5856) == "5,856"
    assert report.num(float("nan")) == "undefined" and report.signed(-0.01) == "\u22120.010"
    assert report.plural(1, "image") == "1 image" and report.plural(3, "image") == "3 images"
    assert report.duration(42) == "42 s" and report.duration(600) == "10.0 min"
    assert report.join_words(["a"]) == "a" and report.join_words(["a", "b"]) == "a and b"
    assert report.join_words(["a", "b", "c"], "or") == "a, b or c" and report.join_words([]) == ""


def test_md_table_is_a_simple_table_aligned_by_its_rule():
    from pneumo.report import md_table

    frame = pd.DataFrame({"name": ["a|b", "c"], "x": [0.12345, np.nan], "n": [1234, 5]})
    lines = md_table(frame).data.rstrip("\n").split("\n")
    # The rule overhangs a left-aligned header on the right, a right-aligned one on the left.
    assert lines == ["name        x       n",
                     "-----  ------  ------",
                     "a|b     0.123   1,234",
                     "c           –       5"]
    centred = md_table(pd.DataFrame({"v": ["x"]}), align={"v": "center"}).data.split("\n")
    assert centred[:2] == [" v", "---"]
    with pytest.raises(ValueError):
        md_table(pd.DataFrame())
    # A zero-width break after "=" takes no column: the next cell stays in its column.
    broken = md_table(pd.DataFrame({"v": ["a=b", "cc"], "n": [1, 2]})).data.split("\n")
    assert broken[1:4] == ["----  --", "a=\u200bb    1", "cc     2"]


def test_metrics_with_ci_and_labels():
    from pneumo.report import metric_label, metrics_with_ci

    table = pd.DataFrame({"metric": ["roc_auc", "sensitivity_2", "tp"], "value": [0.9, 0.5, 3.0],
                          "ci_low": [0.8, 0.4, 1.0], "ci_high": [0.95, 0.6, 5.0]})
    shown = metrics_with_ci(table, classes=("normal", "bacterial", "viral"))
    assert shown["Metric"].tolist() == ["ROC AUC", "Sensitivity (viral)"]  # counts left out
    assert shown["95% CI"].tolist() == ["[0.800, 0.950]", "[0.400, 0.600]"]
    with pytest.raises(KeyError, match="f1"):
        metrics_with_ci(table, ["f1"])
    with pytest.raises(KeyError, match="metric"):
        metrics_with_ci(table.set_index("metric"))
    assert metric_label("balanced_accuracy") == "Balanced accuracy"


def test_grid_story_explains_the_winner_from_the_numbers():
    from pneumo.metrics import auc_standard_error
    from pneumo.report import grid_table
    from pneumo.report.classification import grid_story

    grid = pd.DataFrame({
        "variant": ["augment=False", "baseline", "width=24", "xrv"],
        "status": ["trained", "trained", "trained", "skipped: weights not cached: missing file 'x'. Copy it."],
        "val_roc_auc": [0.95, 0.90, 0.70, np.nan], "val_balanced_accuracy": [0.9, 0.85, 0.6, np.nan],
        "val_accuracy": [0.9, 0.85, 0.6, np.nan], "best_epoch": [3, 2, 1, np.nan],
        "epochs_run": [4, 4, 2, np.nan], "train_seconds": [10.0, 9.0, 5.0, np.nan],
        "parameters": [1000, 1000, 2000, np.nan],
    })
    se = auc_standard_error(0.95, 100, 50)
    assert 0 < se < 0.05
    story = grid_story(grid, "augment=False", se=se)
    assert "**augment=False** was adopted" in story["winner"] and "0.050" in story["winner"]
    assert "more than one standard error lower" in story["effects"]  # width=24: -0.2
    assert "(weights not cached)" in story["skipped"] and "missing" not in story["skipped"]
    assert grid_table(grid)["Best / run epochs"].iloc[-1] == "skipped"
    tie = grid.assign(val_roc_auc=[1.0, 1.0, 0.7, np.nan], val_balanced_accuracy=[0.9, 0.9, 0.6, np.nan])
    assert "tied" in grid_story(tie, "augment=False", se=0.0)["winner"]


def test_architecture_summary_groups_blocks():
    import torch  # noqa: F401  (architecture_table needs it)

    from pneumo.models import architecture_table, build_model
    from pneumo.report import architecture_summary

    model = build_model({"num_classes": 3, "width": 4, "depth": 2})
    summary = architecture_summary(architecture_table(model, input_shape=(1, 1, 32, 32)))
    assert summary["Stage"].tolist() == ["block1", "block2", "gap", "head", "**total**"]
    assert summary["Layers"].iloc[0] == "2 × (Conv2d → BatchNorm2d → ReLU) → MaxPool2d"
    assert summary["Output"].iloc[1] == "8 × 8 × 8"
    assert summary["Parameters"].iloc[-1] == sum(p.numel() for p in model.parameters())


def test_plots_return_page_sized_figures(tmp_path):
    from pneumo import plots

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    score = np.clip(0.3 * y + rng.uniform(0, 0.7, 200), 0, 1)
    from sklearn.metrics import precision_recall_curve, roc_curve, roc_auc_score, average_precision_score

    fpr, tpr, _ = roc_curve(y, score)
    precision, recall, _ = precision_recall_curve(y, score)
    assert math.isclose(plots.auc_from_curve(fpr, tpr), roc_auc_score(y, score), rel_tol=1e-9)
    assert math.isclose(plots.average_precision_from_curve(precision, recall),
                        average_precision_score(y, score), rel_tol=1e-9)
    images = [rng.integers(0, 255, (32, 32), dtype=np.uint8) for _ in range(7)]
    history = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [0.7, 0.5, 0.4], "val_loss": [0.6, 0.5, 0.55],
                            "train_acc": [0.6, 0.7, 0.8], "val_acc": [0.6, 0.7, 0.7],
                            "val_bal_acc": [0.5, 0.6, 0.6], "val_auc": [0.7, 0.8, 0.8]})
    counts = pd.DataFrame({"normal": [10, 2], "bacterial": [20, 3], "viral": [5, 1]}, index=["train", "test"])
    curves = {"test": {"fpr": fpr, "tpr": tpr, "precision": precision, "recall": recall}}
    figures = {
        "balance": plots.class_balance(counts),
        "samples": plots.sample_grid({"normal": images[:3], "viral": images[3:5]}),
        "curves": plots.learning_curves(history, best_epoch=2),
        "cm": plots.confusion_matrix(np.array([[5, 1], [2, 7]]), ["normal", "pneumonia"]),
        "cm_frame": plots.confusion_matrix(pd.DataFrame({"true": ["a", "b"], "a": [1, 0], "b": [2, 3]})),
        "roc": plots.roc_curves(curves),
        "pr": plots.pr_curves(curves),
        "rocpr": plots.roc_pr_curves(curves),
        "threshold": plots.threshold_plot(y, score, 0.5, rule="Youden's J"),
        "gallery": plots.misclassified_gallery(images, ["normal"] * 7, ["viral"] * 7, [0.9] * 7),
        "empty_gallery": plots.misclassified_gallery([], [], [], []),
        "grid": plots.grid_comparison(pd.DataFrame({"variant": ["a", "b"], "val_roc_auc": [0.8, 0.9]}), chosen="b"),
    }
    for name, fig in figures.items():
        assert isinstance(fig, Figure), name
        width, height = fig.get_size_inches()
        assert width <= 6.5 and 0 < height <= 9, (name, width, height)
        fig.savefig(tmp_path / f"{name}.png")  # renders with Agg, no display needed
    assert plots.class_colour("viral") == plots.CLASS_COLOURS["viral"]


# -- Quarto -------------------------------------------------------------------------------------
#: Lines of a render log that are not problems of the report: ipykernel's note on its local
#: transport (printed by the Jupyter kernel that Quarto starts, whatever the document holds).
HARMLESS_LOG = (re.compile(r"\[IPKernelApp\] WARNING \| Kernel is running over TCP without encryption"),)
#: What a warning or an error looks like in the log of Quarto, pandoc, citeproc or Typst.
PROBLEM_LOG = re.compile(r"\bWARN(ING)?\b|\bwarning:|\berror:|\bERROR\b|[Cc]iteproc|not found", re.IGNORECASE)
#: Unresolved cross-references and citations as Quarto and pandoc print them.
UNRESOLVED = ("?@", "(fig?)", "(tbl?)", "(sec?)", "?fig-", "?tbl-", "?sec-")


def problems_in_log(log: str) -> list[str]:
    """The lines of a render log that report a warning or an error."""
    return [line for line in log.splitlines()
            if PROBLEM_LOG.search(line) and not any(p.search(line) for p in HARMLESS_LOG)]


def words_below_margin(bbox_html: str, *, bottom_margin_pt: float) -> list[tuple[int, str]]:
    """``(page, word)`` of every word in a page's bottom margin except the page number.

    ``bbox_html`` is ``pdftotext -bbox`` output; Typst sets the page number in the bottom
    margin, and nothing else belongs there (a table that runs off a page prints over it).
    """
    out = []
    pages = re.findall(r'<page width="([\d.]+)" height="([\d.]+)">(.*?)</page>', bbox_html, re.S)
    for number, (_, height, body) in enumerate(pages, 1):
        limit = float(height) - bottom_margin_pt
        low = [w for y, w in re.findall(r'<word xMin="[\d.]+" yMin="([\d.]+)" xMax="[\d.]+" yMax="[\d.]+">([^<]*)</word>', body)
               if float(y) > limit]
        if low not in ([], [str(number)]) and not (len(low) == 1 and low[0].isdigit()):
            out.extend((number, w) for w in low)
    return out


def last_rows(nb) -> dict[str, str]:
    """``{table label: first cell of its last row}`` from the executed report's table cells."""
    rows = {}
    for label, cell in _cells(nb, "tbl-").items():
        text = next(o["data"]["text/markdown"] for o in cell.outputs if "text/markdown" in o.get("data", {}))
        lines = _table_lines(text)
        cells = [c.strip("*` ").replace("\u200b", "") for c in _cells_of(lines[-1], lines[1])]
        rows[label] = next((c for c in cells if c and c != "–"), "")
    return rows


def test_log_and_page_checks_can_fail():
    """The render test's checks catch what they are for (so a green render test means something)."""
    assert problems_in_log("WARN (typst) unknown font\nOutput created: x.pdf") == ["WARN (typst) unknown font"]
    assert problems_in_log("[WARNING] Citeproc: citation fig not found") != []
    assert problems_in_log("[IPKernelApp] WARNING | Kernel is running over TCP without encryption. All") == []
    page = ('<page width="595.0" height="842.0"><word xMin="1" yMin="700.0" xMax="2" yMax="710">body</word>'
            '<word xMin="1" yMin="800.0" xMax="2" yMax="810">3</word></page>')
    assert words_below_margin(page, bottom_margin_pt=62) == []
    overprint = page.replace(">body<", ">x<").replace('yMin="700.0"', 'yMin="790.0"')
    assert words_below_margin(overprint, bottom_margin_pt=62) == [(1, "x"), (1, "3")]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("quarto") is None,
                    reason="Quarto is not on PATH (install Quarto >= 1.7, https://quarto.org; here "
                           "../shared/tools/quarto/install.sh lays one out)")
def test_quarto_renders_html_and_pdf(report_env, executed, tmp_path):
    """`quarto render` builds the HTML and the Typst PDF with no warning, every reference
    resolved and every page within its margins."""
    out = tmp_path / "render"
    env = {**os.environ, **report_env, "QUARTO_PYTHON": sys.executable,
           "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
    result = subprocess.run(["quarto", "render", "--output-dir", str(out)], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=1800)
    check_render(result, out, executed)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("quarto") is None, reason="Quarto is not on PATH (see the test above)")
def test_make_report_executes_once_then_typesets_from_the_cache(report_env, executed, tmp_path):
    """`python -m pneumo.report` (what `make report` runs) renders both formats; a second run
    with nothing changed runs no cell and writes the same report."""
    env = {**os.environ, **report_env}
    command = [sys.executable, "-m", "pneumo.report", "--profile", "smoke", "--output-dir"]
    first = subprocess.run([*command, str(tmp_path / "first")], cwd=REPO_ROOT, env=env,
                           capture_output=True, text=True, timeout=1800)
    check_render(first, tmp_path / "first", executed)
    second = subprocess.run([*command, str(tmp_path / "second")], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=1800)
    check_render(second, tmp_path / "second", executed)
    assert "typesetting only" in second.stderr and "Executing" not in second.stdout + second.stderr
    html = [(tmp_path / run / "report" / "index.html").read_bytes() for run in ("first", "second")]
    assert html[0] == html[1]
    text = [subprocess.run(["pdftotext", str(tmp_path / run / "report" / "index.pdf"), "-"],
                           capture_output=True, text=True).stdout for run in ("first", "second")]
    assert text[0] == text[1]


def check_render(result: subprocess.CompletedProcess, out: Path, executed) -> None:
    """The checks of a render: no warning, both files, every reference resolved, every table's
    last row in the PDF and nothing in the bottom margin."""
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    assert not problems_in_log(log), "render log has warnings:\n" + "\n".join(problems_in_log(log))
    html = list(out.rglob("index.html"))
    pdf = list(out.rglob("index.pdf"))
    assert html and pdf, sorted(p.relative_to(out) for p in out.rglob("*"))

    page = html[0].read_text(encoding="utf-8", errors="replace")
    assert "Pneumonia in paediatric chest X-rays" in page
    # What a reader sees: the page without its embedded scripts and styles (whose code can
    # hold "?@" and the like).
    visible = re.sub(r"<(script|style)\b.*?</\1>", "", page, flags=re.S)
    assert not [u for u in UNRESOLVED if u in visible], "unresolved cross-reference in the HTML"
    assert "Kermany" in page and "Identifying Medical Diagnoses" in page  # bibliography rendered
    assert "<img" in page and "data:image/png;base64" in page  # figures embedded

    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed: the PDF's pages were not checked")
    text = subprocess.run(["pdftotext", "-layout", str(pdf[0]), "-"], capture_output=True, text=True).stdout
    pages = text.count("\f")
    assert 20 <= pages <= 120, f"{pages} pages"
    assert not [u for u in UNRESOLVED if u in text], "unresolved cross-reference in the PDF"
    flat = re.sub(r"\s+", " ", text.replace("\u200b", ""))
    # A cell may wrap onto the next line of the page, so each of its words must be there.
    words = set(flat.split())
    missing = {label: row for label, row in last_rows(executed).items()
               if row and not set(row.replace("`", "").split()) <= words}
    assert not missing, f"tables whose last row is not in the PDF: {missing}"
    bbox = subprocess.run(["pdftotext", "-bbox", str(pdf[0]), "-"], capture_output=True, text=True).stdout
    margin_pt = 2.2 / 2.54 * 72  # _quarto.yml: margin y 2.2cm
    assert not words_below_margin(bbox, bottom_margin_pt=margin_pt), "text in the bottom margin"

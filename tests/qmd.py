"""Execute a Quarto document's Python through Jupyter, without Quarto.

Quarto is not needed to check that a report *computes*: this module reads a ``.qmd``,
resolves ``{{< include >}}`` shortcodes (recursively, paths relative to the including file,
or to the project root when they start with ``/``), turns every ```` ```{python} ```` cell
into a notebook code cell (``#|`` option lines kept, ``#| tags: [...]`` copied into the cell
metadata) and every inline expression `` `{python} expr` `` into a checked evaluation at the
place where it appears (after the code cells above it, as Quarto evaluates them). An
expression must evaluate without error to a string, an integer or
``IPython.display.Markdown``; it must not read "nan" or "None", must not be an unformatted
float, and a string must hold neither a backslash nor both quote characters (Quarto shows
strings through their ``repr``, stripping the quotes but not the escapes) nor an ``@``
reference or citation (Quarto resolves those only in Markdown output).

:func:`execute` runs the notebook with nbclient on the ``python3`` kernel from the project
root (what ``execute-dir: project`` does) with extra environment variables, and raises
:class:`QmdError` naming the source file and line of the first failing cell or expression.

Also used by the structural tests: :func:`expand`, :func:`labels`, :func:`references`,
:func:`citations`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import nbformat

PROJECT_ROOT = Path(__file__).resolve().parent.parent

INCLUDE_RE = re.compile(r"^\s*\{\{<\s*include\s+(\S+?)\s*>\}\}\s*$")
# An executable fence opens with ```{python} or ```{python options}; other fences are text.
FENCE_RE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*(.*)$")
EXEC_RE = re.compile(r"^\{\s*python\b[^}]*\}\s*$")
# `{python} expr` but not the escaped forms ``{python} x`` or `{{python}} x`.
INLINE_RE = re.compile(r"(?<!`)`\{python\}\s+([^`]+?)`(?!`)")
LABEL_RE = re.compile(r"^#\|\s*label:\s*([\w-]+)\s*$")
# Cross-reference targets defined in markdown: {#fig-x}, {#tbl-x .class}, {#sec-x}.
ID_RE = re.compile(r"\{#((?:fig|tbl|sec|lst|eq)-[\w-]+)")
# @fig-x / @tbl-x / @sec-x references (not e-mail addresses, not citations of other keys).
REF_RE = re.compile(r"(?<![\w@])@((?:fig|tbl|sec|lst|eq)-[\w-]*\w)")
# Citations: [@key], [@a; @b], [see @key, p. 3], and in-text @key.
CITE_RE = re.compile(r"(?<![\w@.])@([A-Za-z][\w:.#$%&+?<>~/-]*\w)")


class QmdError(RuntimeError):
    """A cell or inline expression of a report document failed."""


@dataclass
class Line:
    """One line of the expanded document and where it came from."""

    text: str
    file: Path
    number: int

    @property
    def where(self) -> str:
        try:
            name = self.file.relative_to(PROJECT_ROOT)
        except ValueError:
            name = self.file
        return f"{name}:{self.number}"


@dataclass
class Document:
    """A parsed document: the expanded lines, its code cells and inline expressions."""

    path: Path
    lines: list[Line]
    includes: list[Path] = field(default_factory=list)


def expand(path: str | os.PathLike, *, _stack: tuple[Path, ...] = ()) -> Document:
    """Read ``path`` with every ``{{< include file >}}`` replaced by that file's lines.

    Raises
    ------
    FileNotFoundError
        For an included file that does not exist (names the including line).
    QmdError
        For an include cycle.
    """
    path = Path(path).resolve()
    if path in _stack:
        raise QmdError(f"include cycle: {' -> '.join(str(p) for p in (*_stack, path))}")
    doc = Document(path=path, lines=[])
    fence: str | None = None
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        m = FENCE_RE.match(text)
        if m:
            marker = m.group(2)
            if fence is None:
                fence = marker
            elif marker[0] == fence[0] and len(marker) >= len(fence) and not m.group(3).strip():
                fence = None
        include = INCLUDE_RE.match(text) if fence is None else None
        if include:
            target = include.group(1).strip("'\"")
            resolved = (PROJECT_ROOT / target.lstrip("/")) if target.startswith("/") else path.parent / target
            if not resolved.is_file():
                raise FileNotFoundError(f"{path}:{number}: included file {target!r} not found at {resolved}")
            child = expand(resolved, _stack=(*_stack, path))
            doc.includes.append(resolved.resolve())
            doc.includes.extend(child.includes)
            doc.lines.extend(child.lines)
        else:
            doc.lines.append(Line(text, path, number))
    return doc


def _strip_front_matter(lines: list[Line]) -> list[Line]:
    if lines and lines[0].text.strip() == "---":
        for i in range(1, len(lines)):
            if lines[i].text.strip() in ("---", "..."):
                return lines[i + 1:]
    return lines


@dataclass
class Chunk:
    """A code cell or a markdown run."""

    kind: str  # "code" | "markdown"
    lines: list[Line]


def chunks(doc: Document) -> list[Chunk]:
    """Split the document body into executable Python cells and markdown (other fences included)."""
    out: list[Chunk] = []
    markdown: list[Line] = []
    code: list[Line] | None = None
    fence: str | None = None
    executable = False
    for line in _strip_front_matter(doc.lines):
        m = FENCE_RE.match(line.text)
        if fence is None and m:
            fence, executable = m.group(2), bool(EXEC_RE.match(m.group(3).strip()))
            if executable:
                if markdown:
                    out.append(Chunk("markdown", markdown))
                    markdown = []
                code = []
            else:
                markdown.append(line)
            continue
        if fence is not None and m and m.group(2)[0] == fence[0] and len(m.group(2)) >= len(fence) \
                and not m.group(3).strip():
            if executable:
                out.append(Chunk("code", code or []))
                code = None
            else:
                markdown.append(line)
            fence, executable = None, False
            continue
        if executable:
            code.append(line)  # type: ignore[union-attr]
        else:
            markdown.append(line)
    if fence is not None:
        raise QmdError(f"unclosed code fence in {doc.path}")
    if markdown:
        out.append(Chunk("markdown", markdown))
    return out


def _prose_lines(chunk: Chunk) -> Iterable[Line]:
    """Markdown lines outside non-executable fences (``` ```bash ```` examples are not evaluated)."""
    fence = None
    for line in chunk.lines:
        m = FENCE_RE.match(line.text)
        if m:
            if fence is None:
                fence = m.group(2)
                continue
            if m.group(2)[0] == fence[0] and not m.group(3).strip():
                fence = None
                continue
        if fence is None:
            yield line


def inline_expressions(doc: Document) -> list[tuple[Line, str]]:
    """Every inline `` `{python} expr` `` in the prose, with its source line."""
    found = []
    for chunk in chunks(doc):
        if chunk.kind == "markdown":
            for line in _prose_lines(chunk):
                found.extend((line, m.group(1).strip()) for m in INLINE_RE.finditer(line.text))
    return found


_CHECKER = r'''
def __qmd_check(items):
    import math, numbers, re
    from IPython.display import Markdown
    for where, expr in items:
        try:
            value = eval(expr, globals())
        except Exception as error:
            raise RuntimeError(f"inline expression at {where} failed: `{{python}} {expr}`: "
                               f"{type(error).__name__}: {error}") from error
        if isinstance(value, Markdown):
            text = value.data
        elif isinstance(value, (str, numbers.Number)) and not isinstance(value, bool):
            text = str(value)
        else:
            raise TypeError(f"inline expression at {where} returned {type(value).__name__}; "
                            f"expected str, a number or Markdown: `{{python}} {expr}`")
        if isinstance(value, numbers.Number) and not math.isfinite(float(value)):
            raise ValueError(f"inline expression at {where} is {value!r}: `{{python}} {expr}`")
        if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
            raise TypeError(f"inline expression at {where} is an unformatted float {value!r}; "
                            f"format it (num, pct, ...): `{{python}} {expr}`")
        if isinstance(value, str) and ("\\" in text or ("'" in text and '"' in text)):
            # Quarto shows a string through its repr: quotes are stripped, but escapes stay.
            raise ValueError(f"inline expression at {where} holds a backslash or both quote "
                             f"characters, which Quarto would show escaped: {text!r}")
        if isinstance(value, str) and re.search(r"(?<![\w.])@[A-Za-z]", text):
            # Quarto inserts a string as text: "@fig-x" would show as a broken citation "(fig?)-x".
            raise ValueError(f"inline expression at {where} carries a reference or citation in a plain "
                             f"string; return it as Markdown (pneumo.report.markdown): {text!r}")
        if not text.strip() or re.search(r"\bnan\b", text, re.IGNORECASE) or re.search(r"\bNone\b", text):
            raise ValueError(f"inline expression at {where} reads {text!r}: `{{python}} {expr}`")
'''


#: What Quarto's Jupyter setup does before the first cell (matplotlib figures displayed as
#: PNG by the inline backend), so figure cells produce the same outputs here.
_QUARTO_SETUP = """
import matplotlib.pyplot as plt
from matplotlib_inline.backend_inline import set_matplotlib_formats
set_matplotlib_formats("png")
"""


def to_notebook(doc: Document, *, quarto_setup: bool = True) -> nbformat.NotebookNode:
    """The document as a notebook: its code cells, plus one check cell per markdown run with
    inline expressions (placed where the run is, so they see the state Quarto would).

    ``quarto_setup`` prepends a cell doing what Quarto's kernel setup does for matplotlib.
    """
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    checker = nbformat.v4.new_code_cell((_QUARTO_SETUP if quarto_setup else "") + _CHECKER)
    checker.metadata["qmd"] = {"where": "checker"}
    nb.cells.append(checker)
    for chunk in chunks(doc):
        if chunk.kind == "code":
            source = "\n".join(line.text for line in chunk.lines)
            cell = nbformat.v4.new_code_cell(source)
            where = chunk.lines[0].where if chunk.lines else "?"
            cell.metadata["qmd"] = {"where": where}
            for line in chunk.lines:
                m = LABEL_RE.match(line.text.strip())
                if m:
                    cell.metadata["qmd"]["label"] = m.group(1)
                tags = re.match(r"^#\|\s*tags:\s*\[(.*)\]\s*$", line.text.strip())
                if tags:
                    cell.metadata["tags"] = [t.strip().strip("'\"") for t in tags.group(1).split(",") if t.strip()]
            nb.cells.append(cell)
        else:
            items = [(line.where, m.group(1).strip()) for line in _prose_lines(chunk)
                     for m in INLINE_RE.finditer(line.text)]
            if items:
                cell = nbformat.v4.new_code_cell(f"__qmd_check({json.dumps(items)})")
                cell.metadata["qmd"] = {"where": items[0][0], "inline": len(items)}
                nb.cells.append(cell)
    return nb


def execute(nb: nbformat.NotebookNode, *, env: Mapping[str, str] | None = None, timeout: int = 900,
            cwd: str | os.PathLike = PROJECT_ROOT) -> nbformat.NotebookNode:
    """Run the notebook on the ``python3`` kernel in ``cwd`` with ``env`` added to the environment.

    Raises
    ------
    QmdError
        On the first failing cell, naming its source location and the error.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    client = NotebookClient(nb, kernel_name="python3", timeout=timeout, allow_errors=False,
                            resources={"metadata": {"path": str(cwd)}})
    full_env = {**os.environ, **(env or {})}
    try:
        client.execute(env=full_env, cwd=str(cwd))
    except CellExecutionError as error:
        failing = next((c for c in nb.cells if c.cell_type == "code" and any(
            o.get("output_type") == "error" for o in c.get("outputs", []))), None)
        where = failing.metadata.get("qmd", {}).get("where", "?") if failing is not None else "?"
        raise QmdError(f"report cell at {where} failed:\n{error}") from None
    return nb


def run(path: str | os.PathLike, **kwargs) -> nbformat.NotebookNode:
    """Expand, convert and execute a document (see :func:`execute` for ``kwargs``)."""
    return execute(to_notebook(expand(path)), **kwargs)


# -- structure ---------------------------------------------------------------------------------
def labels(doc: Document) -> set[str]:
    """Cross-reference targets: ``#| label:`` of code cells and ``{#fig-x}`` / ``{#sec-x}`` ids."""
    found: set[str] = set()
    for line in doc.lines:
        m = LABEL_RE.match(line.text.strip())
        if m:
            found.add(m.group(1))
        found.update(ID_RE.findall(line.text))
    return found


def _prose(doc: Document) -> list[Line]:
    return [line for chunk in chunks(doc) if chunk.kind == "markdown" for line in _prose_lines(chunk)]


def references(doc: Document) -> list[tuple[Line, str]]:
    """``@fig-x``, ``@tbl-x``, ``@sec-x`` ... references in the prose."""
    return [(line, m) for line in _prose(doc) for m in REF_RE.findall(_without_code(line.text))]


def citations(doc: Document) -> list[tuple[Line, str]]:
    """Citation keys (``[@key]``, ``@key``) in the prose, cross-references excluded."""
    out = []
    for line in _prose(doc):
        for key in CITE_RE.findall(_without_code(line.text)):
            if not re.match(r"(fig|tbl|sec|lst|eq)-", key):
                out.append((line, key))
    return out


def _without_code(text: str) -> str:
    """Drop inline code spans (`...`), which may hold Python with ``@`` or e-mail addresses."""
    return re.sub(r"`[^`]*`", "", text)


def bib_keys(path: str | os.PathLike) -> set[str]:
    """Entry keys of a BibTeX file."""
    text = Path(path).read_text(encoding="utf-8")
    return set(re.findall(r"@\w+\s*\{\s*([^,\s]+)\s*,", text))

"""The layout of pneumo.plots: a package that only re-exports, modules that import the style."""

import ast
from pathlib import Path

import pneumo.plots

PLOTS = Path(pneumo.plots.__file__).parent


def test_every_public_name_is_re_exported():
    from pneumo.plots import classification
    from pneumo.plots.style import MAX_WIDTH, STYLE

    for name in pneumo.plots.__all__:
        assert hasattr(pneumo.plots, name), name
    assert set(classification.__all__) <= set(pneumo.plots.__all__)
    assert pneumo.plots.MAX_WIDTH == MAX_WIDTH and pneumo.plots.STYLE is STYLE


def test_style_is_the_context_manager_and_its_module_still_imports():
    from pneumo.plots.style import OKABE_ITO, style

    # The function binds over the submodule's name: `from pneumo.plots import style` and
    # `import pneumo.plots.style as s` give the function; import the module's names directly.
    assert pneumo.plots.style is style
    with pneumo.plots.style():
        pass
    assert OKABE_ITO["black"] == "#000000"


def test_no_figure_module_imports_its_package():
    for path in sorted(PLOTS.glob("*.py")):
        if path.name == "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.module != "pneumo.plots", f"{path.name}:{node.lineno} imports pneumo.plots"
            elif isinstance(node, ast.Import):
                assert all(alias.name != "pneumo.plots" for alias in node.names), f"{path.name}:{node.lineno}"


def test_init_only_re_exports():
    tree = ast.parse((PLOTS / "__init__.py").read_text())
    kinds = {type(node).__name__ for node in tree.body}
    assert kinds <= {"Expr", "ImportFrom", "Assign"}, kinds  # docstring, imports, __all__

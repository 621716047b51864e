"""The layout of pneumo.plots: a package that only re-exports, modules that import the style."""

import ast
from pathlib import Path

import pneumo.plots

PLOTS = Path(pneumo.plots.__file__).parent


def test_every_public_name_is_re_exported():
    from pneumo.plots import classification, classification_eval
    from pneumo.plots.style import MAX_WIDTH, STYLE

    for name in pneumo.plots.__all__:
        assert hasattr(pneumo.plots, name), name
    assert set(classification.__all__) | set(classification_eval.__all__) <= set(pneumo.plots.__all__)
    assert pneumo.plots.MAX_WIDTH == MAX_WIDTH and pneumo.plots.STYLE is STYLE


def test_style_module_and_context_manager():
    import matplotlib as mpl

    from pneumo.plots import style

    assert style.OKABE_ITO["black"] == "#000000"  # the module, not shadowed by a function
    with pneumo.plots.use_style():
        assert all(mpl.rcParams[k] == v for k, v in style.STYLE.items() if not isinstance(v, (list, tuple)))


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

"""The layout's rules: the library never imports the application layer, the import graph of
sgm's modules has no cycles, `import sgm` has no side effects, one public name per thing."""

import ast
import subprocess
import sys
from pathlib import Path

import sgm

PACKAGE = Path(sgm.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The sgm modules that `path` imports at module level or inside functions."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("sgm")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("sgm"):
                continue
            found.add(target)
            for alias in node.names:  # `from . import data` names a module
                if (PACKAGE.parent / Path(*f"{target}.{alias.name}".split("."))).exists():
                    found.add(f"{target}.{alias.name}")
                elif (PACKAGE.parent / f"{target.replace('.', '/')}/{alias.name}.py").exists():
                    found.add(f"{target}.{alias.name}")
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: {i for i in imports_of(p) if i in modules and i != m} for m, p in modules.items()}


def test_the_library_never_imports_the_application_layer():
    offenders = {
        m: sorted(i for i in deps if i.startswith("sgm.experiment"))
        for m, deps in graph().items()
        if not m.startswith("sgm.experiment")
    }
    assert not {m: d for m, d in offenders.items() if d}


def test_the_import_graph_has_no_cycles():
    g = graph()
    # a package's __init__ importing its own submodules is how re-exports work, not a cycle
    edges = {
        m: {d for d in deps if not (d.startswith(m + ".") and m in g)} for m, deps in g.items()
    }
    edges = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in edges.items()}
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for d in edges[m]:
            if state.get(d) == 1:
                raise AssertionError(" -> ".join([*path, m, d]))
            if d not in state:
                visit(d, [*path, m])
        state[m] = 2

    for m in edges:
        if m not in state:
            visit(m, [])


def test_import_sgm_has_no_side_effects():
    code = (
        "import sys, sgm; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('matplotlib', 'tensorflow_datasets', 'tensorflow') or m.startswith('sgm.experiment')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_plotting_leaves_the_backend_alone(tmp_path):
    code = (
        "import matplotlib; matplotlib.use('svg'); import numpy as np; "
        "import sgm.experiment as e; "
        f"e.plot.save_scatter(np.zeros((3, 2)), {str(tmp_path / 'a.png')!r}); "
        "print(matplotlib.get_backend())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "svg"
    assert (tmp_path / "a.png").stat().st_size > 0


def test_no_two_public_names_differ_only_by_case():
    names = [n for n in dir(sgm) if not n.startswith("_")]
    lowered = [n.lower() for n in names]
    assert len(set(lowered)) == len(lowered)

"""The shape of the house, checked on the source: no import circle, no module importing from a
layer above its own, one door to MLflow, and modules and functions a reader can hold in mind.

Imports are read from the syntax tree, function-local ones included (a circle that only closes
at run time is still a circle); `if TYPE_CHECKING:` blocks are left out."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "catdog"
MAX_MODULE_LINES = 500  # lines as ruff format writes them (a long call, one argument a line)
MAX_FUNCTION_LINES = 100

# Data flows one way: each module may import from its own layer and the ones before it.
LAYERS = [
    ("catdog", "catdog.errors", "catdog.log"),
    ("catdog.data",),
    (
        "catdog.models",
        "catdog.pipeline",
        "catdog.metrics",
        "catdog.plots",
        "catdog.runtime",
        "catdog.plan",
        "catdog.speed",
        "catdog.saliency",
    ),
    ("catdog.settings", "catdog.sweepfile", "catdog.tracking"),
    ("catdog.inference", "catdog.serving", "catdog.train"),
    ("catdog.heldout", "catdog.choose", "catdog.compare", "catdog.curve", "catdog.curvefit"),
    ("catdog.search",),
    ("catdog.register", "catdog.report", "catdog.distributed"),
    ("catdog.cli", "catdog.__main__"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(tree: ast.AST):
    """Every node, except those under `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The catdog modules NAME imports; `from catdog.x import y` counts as importing
    catdog.x.y when that is a module, and importing a module runs its packages' __init__."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1]
                    + ([base] if base else [])
                )
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target.startswith("catdog"):
                found.add(target)
                parent = target.rpartition(".")[0]
                while parent and parent != "catdog":  # the packages' __init__ run too
                    if not name.startswith(parent + "."):  # (unless NAME is inside it)
                        found.add(parent)
                    parent = parent.rpartition(".")[0]
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_among_catdog_modules():
    assert cycles(graph()) == []


def layer(name: str) -> int:
    best = None
    for i, members in enumerate(LAYERS):
        for m in members:
            if name == m or name.startswith(m + "."):
                if best is None or len(m) > best[1]:
                    best = (i, len(m))
    assert best is not None, f"{name} is in no layer of tests/test_architecture.py"
    return best[0]


def test_no_module_imports_from_a_layer_above_its_own():
    upward = [
        f"{a} -> {b}" for a, targets in graph().items() for b in targets if layer(b) > layer(a)
    ]
    assert upward == []


def test_mlflow_is_reached_only_through_tracking_and_serving():
    door = (PACKAGE / "tracking", PACKAGE / "serving")
    calls = []
    for name, path in modules().items():
        if path.is_relative_to(door[0]) or path.is_relative_to(door[1]):
            continue
        for node in _walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import) and any(
                a.name.split(".")[0] == "mlflow" for a in node.names
            ):
                calls.append(f"{name}:{node.lineno} imports mlflow")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mlflow"):
                calls.append(f"{name}:{node.lineno} imports from mlflow")
            elif isinstance(node, ast.Attribute) and node.attr == "MlflowClient":
                calls.append(f"{name}:{node.lineno} uses MlflowClient")
    assert calls == []


def test_modules_and_functions_are_short():
    long = []
    for name, path in modules().items():
        text = path.read_text()
        if (n := len(text.splitlines())) > MAX_MODULE_LINES:
            long.append(f"{name}: {n} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {n} lines")
    assert long == []


@pytest.mark.parametrize(
    "word",
    [
        "val_accuracy",
        "search_strategy",
        "test_accuracy",
        "seconds_per_epoch",
        "best_epoch",
        "budget_seconds",
        "sweep_seconds",
        "val_accuracy_plain",
        "val_accuracy_tta",
        "distribution",
    ],
)
def test_keys_are_named_once(word):
    """A param or metric key is a constant of `catdog.keys`; elsewhere it appears only
    in prose (docstrings, messages), never as a string of its own."""
    literal = []
    for name, path in modules().items():
        if name == "catdog.keys":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value == word:
                literal.append(f"{name}:{node.lineno}")
    assert literal == []


# Where Dogs-vs-Cats may be named: the layouts that detect its downloads, and the download's
# defaults. Everything else takes its classes from the prepared dataset.
DOGS_VS_CATS_HOMES = {"catdog.data.sources", "catdog.data.download"}
DOGS_VS_CATS_WORDS = {"cat", "dog", "cats", "dogs"}


def dogs_vs_cats_literals(tree: ast.AST) -> list[ast.Constant]:
    """String constants (f-string parts included) that are a Dogs-vs-Cats class name or hold
    `p_dog`, the old models' output."""
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and (node.value.strip().lower() in DOGS_VS_CATS_WORDS or "p_dog" in node.value.lower())
    ]


def test_the_dogs_vs_cats_check_finds_a_literal():
    tree = ast.parse(
        'LABELS = ("cat", "Dog")\nx = f"{1} p_dog"\n"""Dogs-vs-Cats, a dog\'s life"""\n'
    )
    assert [n.value for n in dogs_vs_cats_literals(tree)] == ["cat", "Dog", " p_dog"]


def test_cats_and_dogs_are_named_only_where_their_downloads_are_read():
    """No class name of Dogs-vs-Cats, and no `p_dog`, as a string of its own outside
    DOGS_VS_CATS_HOMES; the report template is checked too."""
    import re

    literal = [
        f"{name}:{node.lineno} {node.value!r}"
        for name, path in modules().items()
        if name not in DOGS_VS_CATS_HOMES
        for node in dogs_vs_cats_literals(ast.parse(path.read_text()))
    ]
    for template in sorted((PACKAGE / "templates").glob("*")):
        for n, line in enumerate(template.read_text().splitlines(), 1):
            if re.search(r"p_dog|\b(cat|dog)s?\b", line, re.IGNORECASE):
                literal.append(f"{template.name}:{n} {line.strip()!r}")
    assert literal == []

"""The import rules of docs/ARCHITECTURE.md, enforced: which part of the tree may import which.

Read from the source (every import statement, those inside functions too), so a lazy import that
would only fail on a cluster, or only in the server image, fails here first. The running check
that serving answers requests without TensorFlow in the process is in tests/serving/test_app.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The core's parts, lowest first: a module imports the shared modules, its own part, and the
# parts of lower layers, never a part of its own layer or above.
LAYERS = (
    {"errors", "config", "flags", "console", "resources", "cpuinfo"},  # shared
    {"io"},
    {"data", "inference"},
    {"evaluation"},
    {"network"},
    {"training"},
)
SHARED = LAYERS[0]
ADAPTERS = {"cli", "serving", "components", "pipelines"}
FRAMEWORKS = {"kfp", "flask", "werkzeug", "gunicorn", "kubernetes", "kubeflow"}
TENSORFLOW = {"tensorflow", "keras"}
# Parts the server image imports, so they may import TensorFlow only inside the functions that
# run a Keras model or a TFRecord (never when the module loads).
TENSORFLOW_FREE_ON_IMPORT = {"io", "data", "inference"} | SHARED
# What each adapter may not import (besides the cli, which no one imports).
ADAPTER_FORBIDDEN = {
    "serving": TENSORFLOW
    | {"kfp", "kubernetes", "kubeflow", "components", "pipelines"}
    | {"kubedetect.training", "kubedetect.network", "kubedetect.evaluation", "kubedetect.data"},
    "components": {"serving", "pipelines", "flask", "gunicorn"},
    "pipelines": {"serving", "flask", "gunicorn"},
}


def imports_of(source: str) -> list[tuple[tuple[str, ...], bool]]:
    """Every absolute import statement in `source`: the dotted names it may load (`from a import
    b` may load `a.b`, since b may be a module) and whether it runs when the module loads."""
    tree = ast.parse(source)
    top_level = {id(node) for node in tree.body}
    top_level |= {
        id(child)
        for node in tree.body
        if isinstance(node, ast.If | ast.Try)  # guarded imports still run on load ...
        and not (isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test))
        for child in ast.walk(node)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [((alias.name,), id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = (node.module, *(f"{node.module}.{a.name}" for a in node.names))
            found.append((names, id(node) in top_level))
    return found


def part_of(path: Path) -> str:
    """kubedetect/io/fs.py -> "io"; kubedetect/config.py -> "config"."""
    relative = path.relative_to(ROOT / "kubedetect").parts
    return relative[0] if len(relative) > 1 else path.stem


def layer_of(part: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if part in layer)


def core_violations(path: Path, source: str) -> list[str]:
    part = part_of(path)

    def problem(name: str, at_load: bool) -> str | None:
        top, *rest = name.split(".")
        if top in FRAMEWORKS or top in ADAPTERS:
            return f"imports {name}: the core knows no framework and no adapter"
        if top in TENSORFLOW and at_load and part in TENSORFLOW_FREE_ON_IMPORT:
            return f"imports {name} on load: serving imports {part} without TensorFlow"
        if top == "kubedetect" and rest and rest[0] != "__version__":
            other = rest[0]
            if (
                other != part
                and other not in SHARED
                and (part in SHARED or layer_of(other) >= layer_of(part))
            ):
                return f"imports {name}: {part} may not import {other} (layers)"
        return None

    problems = []
    for names, at_load in imports_of(source):
        found = next(filter(None, (problem(name, at_load) for name in names)), None)
        if found:
            problems.append(f"{path.relative_to(ROOT)}: {found}")
    return problems


def adapter_violations(path: Path, source: str) -> list[str]:
    adapter = path.relative_to(ROOT).parts[0]
    forbidden = ADAPTER_FORBIDDEN.get(adapter, set()) | ({"cli"} if adapter != "cli" else set())
    problems = []
    for names, _ in imports_of(source):
        hit = [n for n in names for f in forbidden if n == f or n.startswith(f + ".")]
        if hit:
            problems.append(f"{path.relative_to(ROOT)}: imports {hit[0]} ({adapter} may not)")
    return problems


def sources(folder: str) -> list[Path]:
    found = sorted((ROOT / folder).rglob("*.py"))
    assert found, f"no Python files under {folder}/"
    return found


def test_the_core_imports_no_framework_no_adapter_and_only_lower_layers():
    problems = [
        p for path in sources("kubedetect") for p in core_violations(path, path.read_text())
    ]
    assert problems == []


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_adapters_keep_to_their_side(adapter):
    problems = [p for path in sources(adapter) for p in adapter_violations(path, path.read_text())]
    assert problems == []


def test_every_core_part_is_in_a_layer():
    """A new subpackage or top-level module has its place in the rules before it lands."""
    parts = {part_of(p) for p in sources("kubedetect")} - {"__init__"}
    assert parts == set().union(*LAYERS)


@pytest.mark.parametrize(
    ("where", "source", "expected"),
    [
        ("kubedetect/io/x.py", "def f():\n    import kfp\n", "no framework"),
        ("kubedetect/data/x.py", "from serving.app import create_app\n", "no adapter"),
        ("kubedetect/inference/x.py", "import tensorflow as tf\n", "without TensorFlow"),
        ("kubedetect/inference/x.py", "try:\n    import keras\nexcept ImportError:\n    pass\n",
         "without TensorFlow"),
        ("kubedetect/evaluation/x.py", "from kubedetect.training import cluster\n", "layers"),
        ("kubedetect/data/x.py", "from kubedetect.inference.decode import decode\n", "layers"),
        ("kubedetect/config.py", "from kubedetect.io import fs\n", "layers"),
    ],
)  # fmt: skip
def test_the_rules_catch_what_they_forbid(where, source, expected):
    """The checks above find what they look for: a lazy import, a guarded one, a layer crossed."""
    problems = core_violations(ROOT / where, source)
    assert len(problems) == 1 and expected in problems[0]


def test_lazy_tensorflow_is_allowed_where_a_keras_model_runs():
    """The one allowance: TensorFlow imported inside a function, or only for type checking."""
    source = (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import tensorflow\n"
        "def run():\n    import keras\n"
    )
    assert core_violations(ROOT / "kubedetect/inference/x.py", source) == []


@pytest.mark.parametrize(
    ("where", "source"),
    [
        ("serving/x.py", "def f():\n    import tensorflow\n"),
        ("serving/x.py", "from kubedetect.training.train import train\n"),
        ("components/x.py", "from serving.app import create_app\n"),
        ("pipelines/x.py", "from cli.main import main\n"),
    ],
)
def test_the_adapter_rules_catch_what_they_forbid(where, source):
    assert len(adapter_violations(ROOT / where, source)) == 1


def test_one_component_per_file_named_after_it():
    """Every component the pipeline runs is the only function of a module of its own name, so
    a reader finds `quality_gate` in components/quality_gate.py and nothing else there."""
    pipeline = ast.parse((ROOT / "pipelines" / "pipeline.py").read_text())
    imported = {
        alias.name: node.module.split(".", 1)[1]
        for node in ast.walk(pipeline)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("components.")
        for alias in node.names
    }
    made = {  # component(func, ...): the functions the pipeline makes KFP components of
        node.args[0].id
        for node in ast.walk(pipeline)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", None) == "component"
        and node.args
        and isinstance(node.args[0], ast.Name)
    }
    assert len(made) == 10, made  # the pipeline's ten steps
    used = {name: imported[name] for name in made}
    for component, module in used.items():
        tree = ast.parse((ROOT / "components" / f"{module}.py").read_text())
        functions = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
        assert (module, functions) == (component, [component])

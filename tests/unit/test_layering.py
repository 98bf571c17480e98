"""Imports run one way: no cycles, no stage importing another, light entry points stay light."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "src"
HEAVY = (
    "tensorflow",
    "keras",
    "sklearn",
    "mlflow",
    "matplotlib",
    "tf2onnx",
    "onnxruntime",
    "pooch",
    "requests",
)
# entry point (code run in a fresh interpreter) -> heavy packages it must not load
ENTRY_POINTS = {
    "dlzoo --help": ("from dlzoo.cli import build_parser; build_parser()", HEAVY),
    "dlzoo serve": (
        "import dlzoo.serve.app, dlzoo.serve.grpc_service, dlzoo.serve.sessions",
        ("tensorflow", "keras", "sklearn", "mlflow", "matplotlib", "tf2onnx", "pooch"),
    ),
    "dlzoo repository": ("import dlzoo.repository", HEAVY),
    "dlzoo generate": ("import dlzoo.data.generated", ("tensorflow", "keras", "mlflow", "onnxruntime")),
    "dlzoo train": ("import dlzoo.train.stage", ("tf2onnx", "onnxruntime")),
    # A family's module loads when a stage asks for it: the NumPy MLP's stages never load TensorFlow.
    "dlzoo train scratch_mlp": (
        "import dlzoo.train.stage; from dlzoo import models; models.family('scratch_mlp')",
        ("tensorflow", "keras", "tf2onnx", "onnxruntime"),
    ),
    "dlzoo export scratch_mlp": (
        "import dlzoo.export.stage; from dlzoo import models; models.family('scratch_mlp')",
        ("tensorflow", "keras", "tf2onnx", "mlflow"),
    ),
    # Evaluate scores the exported ONNX file with ONNX Runtime; the track stage logs the results.
    "dlzoo evaluate": ("import dlzoo.evaluate.stage", ("tensorflow", "keras", "mlflow", "tf2onnx")),
    "dlzoo track": ("import dlzoo.track.stage", ("tensorflow", "keras", "tf2onnx")),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The dlzoo modules a file imports anywhere (function-level imports too), with their packages."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            parts = name.split(".")
            found |= {".".join(parts[:end]) for end in range(1, len(parts) + 1)}
    return {name for name in found if name in known}


def import_graph() -> dict[str, set[str]]:
    files = {module_name(path): path for path in SOURCE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        packages = {".".join(name.split(".")[:end]) for end in range(1, name.count(".") + 1)}
        graph[name] = imported_modules(path, set(files)) - packages - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_has_no_cycle_counting_function_level_imports():
    graph = import_graph()
    assert "dlzoo.train.loop" in graph and "dlzoo.serve.app" in graph  # the walk found the package
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


VERBS = ("data", "train", "evaluate", "export", "report", "serve")
# What every verb may use: the vocabulary and the files all stages share.
SHARED = {"config", "errors", "inputs", "problems", "records", "repository", "runtime", "store", "track"}


def verb_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in VERBS else None


def test_no_stage_imports_another_stage():
    graph = import_graph()
    stages = {name for name in graph if name.endswith(".stage")}
    verbs = ("train", "evaluate", "export", "report", "track")
    assert {f"dlzoo.{verb}.stage" for verb in verbs} <= stages
    crossings = {stage: sorted(graph[stage] & stages) for stage in stages if graph[stage] & stages}
    assert not crossings


def test_the_server_imports_only_its_own_package_the_shared_modules_and_the_vocabulary():
    graph = import_graph()
    allowed = {f"dlzoo.{name}" for name in SHARED} | {"dlzoo", "dlzoo.data", "dlzoo.data.text"}
    outside = {
        module: sorted(target for target in targets if verb_of(target) != "serve" and target not in allowed)
        for module, targets in graph.items()
        if verb_of(module) == "serve"
    }
    assert {module: targets for module, targets in outside.items() if targets} == {}


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_an_entry_point_loads_none_of_the_heavy_packages_it_does_not_use(entry_point: str):
    code, forbidden = ENTRY_POINTS[entry_point]
    probe = f"import json, sys; {code}; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = {name.split(".")[0] for name in json.loads(result.stdout.splitlines()[-1])}
    assert not loaded & set(forbidden), f"{entry_point} loads {sorted(loaded & set(forbidden))}"

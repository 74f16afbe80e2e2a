"""The layers, stated and checked.

Every import in every .py under runtime/, export/ and ssd_edge/ (imports inside functions
and under `if TYPE_CHECKING:` included: a lazy import is still a dependency) is read with
`ast`, without importing anything, and held to these rules:

1. The runtime (`ssd_edge.runtime`, deployed alone on a Jetson) imports neither the torch
   side's libraries (torch, torchvision, and `onnx`/`onnxsim`, which only the export needs)
   nor any ssd-edge module outside `ssd_edge.runtime` and `ssd_edge.common`: not
   `ssd_edge.export`, not `ssd_edge.data`, `models`, `training`, `bench`, ...
2. The contract modules (CONTRACT below: what a model file is and what it produces) import
   no ssd-edge module but each other and `ssd_edge.common` (so no runtime subpackage:
   backends, cuda, postprocess, ...), and never in a cycle (spec <-> detections was one).
3. `ssd_edge.data` imports nothing from `ssd_edge.training` (the dataset is given its target
   encoder).
4. `ssd_edge.common`, the base of both sides, imports no other ssd-edge module.

Paths map to import names as setup.cfg's package_dir says: runtime/X.py is
ssd_edge.runtime.X, export/X.py is ssd_edge.export.X, ssd_edge/X.py is ssd_edge.X.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"runtime": "ssd_edge.runtime", "export": "ssd_edge.export", "ssd_edge": "ssd_edge"}
RUNTIME = "ssd_edge.runtime"
COMMON = "ssd_edge.common"
CONTRACT = frozenset(f"{RUNTIME}.{name}" for name in (
    "spec",         # ModelSpec, DefaultBoxConfig, the output-shape check
    "detections",   # Detections, PostprocessConfig
    "priors",       # the default boxes of a ModelSpec
    "boxes",        # NumPy box maths
    "model_file",   # model formats, ONNX metadata keys, the engine sidecar
    "preprocess",   # resize + BGR->RGB + scale
    "image_io",     # the image reader and image-folder lister
    "stage_timer",  # per-stage timing
))
TORCH_SIDE_LIBRARIES = ("torch", "torchvision", "onnx", "onnxsim")


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def module_name(path: Path, root: Path, package: str) -> tuple[str, bool]:
    """(import name, whether it is a package's __init__) of the file at `path` under `root`."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    return ".".join([package, *parts]), is_package


def imported_names(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, int]]:
    """(absolute module name, line) of every import in `tree`. `from X import Y` gives X and
    X.Y (Y may be a submodule: `from ssd_edge import training`)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            found.append((source, node.lineno))
            found += [(f"{source}.{alias.name}", node.lineno) for alias in node.names if alias.name != "*"]
    return found


def import_graph(repo: Path) -> dict[str, tuple[Path, list[tuple[str, int]]]]:
    """{module: (file, [(imported module, line)])} for every .py under the three roots."""
    graph = {}
    for folder, package in ROOTS.items():
        root = repo / folder
        for path in sorted(root.rglob("*.py")):
            module, is_package = module_name(path, root, package)
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            graph[module] = (path, imported_names(tree, module, is_package))
    return graph


def _rule_broken(module: str, name: str) -> str | None:
    """Which rule `module` importing `name` breaks, or None."""
    if _within(module, RUNTIME):
        if any(_within(name, library) for library in TORCH_SIDE_LIBRARIES):
            return "the runtime imports a torch-side library"
        if _within(name, "ssd_edge") and name != "ssd_edge" and not (_within(name, RUNTIME) or _within(name, COMMON)):
            return "the runtime imports ssd-edge outside ssd_edge.runtime and ssd_edge.common"
    if module in CONTRACT and _within(name, "ssd_edge") and name != "ssd_edge" and not _within(name, COMMON):
        if not any(_within(name, contract) for contract in CONTRACT) and name != RUNTIME:
            return "a contract module imports a runtime module outside the contract"
    if _within(module, "ssd_edge.data") and _within(name, "ssd_edge.training"):
        return "ssd_edge.data imports ssd_edge.training"
    if _within(module, COMMON) and _within(name, "ssd_edge") and name != "ssd_edge" and not _within(name, COMMON):
        return "ssd_edge.common imports another ssd-edge module"
    return None


def _contract_cycles(graph) -> list[str]:
    """Import cycles among the contract modules, as 'a -> b -> a'."""
    edges = {module: sorted({contract for name, _ in graph[module][1] for contract in CONTRACT
                             if contract != module and _within(name, contract)})
             for module in CONTRACT if module in graph}
    cycles, done = [], set()

    def visit(module, trail):
        if module in trail:
            loop = trail[trail.index(module):]
            start = loop.index(min(loop))  # each cycle named once, from its first module by name
            loop = loop[start:] + loop[:start]
            cycles.append(" -> ".join(loop + [loop[0]]))
            return
        if module in done:
            return
        for target in edges.get(module, ()):
            visit(target, trail + [module])
        done.add(module)

    for module in sorted(edges):
        visit(module, [])
    return cycles


def layer_violations(repo: Path) -> list[str]:
    """One line per import that breaks a rule (file:line: module imports name: rule), then
    one per cycle among the contract modules."""
    graph = import_graph(repo)
    broken = {}  # (file, line, rule) -> the shortest name imported there (X of `from X import Y`)
    for module, (path, names) in sorted(graph.items()):
        for name, line in names:
            rule = _rule_broken(module, name)
            key = (path.relative_to(repo).as_posix(), line, module, rule)
            if rule and (key not in broken or len(name) < len(broken[key])):
                broken[key] = name
    problems = [f"{file}:{line}: {module} imports {name}: {rule}"
                for (file, line, module, rule), name in broken.items()]
    problems += [f"import cycle among the contract modules: {cycle}" for cycle in _contract_cycles(graph)]
    return sorted(problems)


def test_the_tree_keeps_its_layers():
    assert layer_violations(REPO) == []


def test_every_contract_module_exists():
    """A renamed contract module must be renamed here too, or rule 2 silently checks nothing."""
    graph = import_graph(REPO)
    assert sorted(CONTRACT - set(graph)) == []


def _plant(root: Path, files: dict[str, str]) -> Path:
    for folder in ROOTS:
        (root / folder).mkdir(parents=True, exist_ok=True)
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


CLEAN = {
    "ssd_edge/__init__.py": "",
    "ssd_edge/common/__init__.py": "",
    "ssd_edge/common/errors.py": "import os\n",
    "ssd_edge/data/__init__.py": "",
    "ssd_edge/data/dataset.py": "import torch\nfrom ssd_edge.common.errors import SSDEdgeError\n",
    "ssd_edge/training/__init__.py": "",
    "ssd_edge/training/matching.py": "from ssd_edge.data import dataset\nfrom ssd_edge.runtime.boxes import encode\n",
    "runtime/__init__.py": "from ssd_edge.runtime.spec import ModelSpec\n",
    "runtime/spec.py": "from ssd_edge.runtime.detections import Config\nfrom ssd_edge.common.errors import E\n",
    "runtime/detections.py": "import numpy as np\n",
    "runtime/boxes.py": "from .spec import ModelSpec\n",
    "runtime/backends/__init__.py": "",
    "runtime/backends/onnxruntime_backend.py": "import onnxruntime\nfrom ..spec import ModelSpec\n",
    "runtime/detector.py": "from ssd_edge.runtime.backends import onnxruntime_backend\n",
    "export/__init__.py": "",
    "export/parity.py": "import torch\nimport onnx\nfrom ssd_edge.runtime.parity import compare\n",
}


def test_a_clean_planted_tree_passes(tmp_path):
    assert layer_violations(_plant(tmp_path, CLEAN)) == []


def test_planted_violations_are_each_found(tmp_path):
    """Each rule, broken once, in the ways an import can be written: top level, inside a
    function, relative, `from package import submodule`, under TYPE_CHECKING."""
    planted = {
        "runtime/detector.py": """
            def load():
                import torch  # lazily: still a dependency
            """,
        "runtime/draw.py": "from ssd_edge import export\n",
        "runtime/backends/onnxruntime_backend.py": "import onnxruntime\nfrom ...export.engine import Capabilities\n",
        "runtime/image_io.py": "import onnx.helper\n",
        "runtime/doctor/__init__.py": "from ssd_edge.data.synth import sample_images\n",
        "runtime/priors.py": "from ssd_edge.runtime.backends.onnxruntime_backend import open_session\n",
        "runtime/detections.py": """
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from ssd_edge.runtime.spec import ModelSpec
            """,
        "ssd_edge/data/dataset.py": "def encode():\n    from ssd_edge.training.matching import match\n",
        "ssd_edge/common/errors.py": "from ssd_edge.runtime import spec\n",
    }
    found = "\n".join(layer_violations(_plant(tmp_path, {**CLEAN, **planted})))
    expected = [
        "runtime/detector.py:3: ssd_edge.runtime.detector imports torch: the runtime imports a torch-side library",
        "runtime/draw.py:1: ssd_edge.runtime.draw imports ssd_edge.export: the runtime imports ssd-edge outside",
        "ssd_edge.runtime.backends.onnxruntime_backend imports ssd_edge.export.engine: the runtime imports ssd-edge",
        "runtime/image_io.py:1: ssd_edge.runtime.image_io imports onnx.helper: the runtime imports a torch-side",
        "ssd_edge.runtime.doctor imports ssd_edge.data.synth: the runtime imports ssd-edge outside",
        "ssd_edge.runtime.priors imports ssd_edge.runtime.backends.onnxruntime_backend: a contract module imports",
        "ssd_edge/data/dataset.py:2: ssd_edge.data.dataset imports ssd_edge.training.matching: ssd_edge.data imports",
        "ssd_edge/common/errors.py:1: ssd_edge.common.errors imports ssd_edge.runtime: ssd_edge.common imports another",
        "import cycle among the contract modules: ssd_edge.runtime.detections -> ssd_edge.runtime.spec -> "
        "ssd_edge.runtime.detections",
    ]
    assert [line for line in expected if line not in found] == []


def test_the_real_tree_fails_with_one_planted_import(tmp_path):
    """The real runtime, copied, with one import of the export added to the Detector."""
    import shutil

    for folder in ROOTS:
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    detector = tmp_path / "runtime" / "detector.py"
    planted = "\n\ndef _later():\n    from ssd_edge.export.parity import check_parity\n"
    detector.write_text(detector.read_text() + planted)
    found = layer_violations(tmp_path)
    line = len(detector.read_text().splitlines())
    assert found == [f"runtime/detector.py:{line}: ssd_edge.runtime.detector imports ssd_edge.export.parity: "
                     "the runtime imports ssd-edge outside ssd_edge.runtime and ssd_edge.common"]

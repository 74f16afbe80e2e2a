"""Which parts of TensorRT's Python API our code uses, found by reading the source (AST, nothing
imported), and whether a real `tensorrt` module has them.

`scan_tree(root)` walks every module under runtime/ and export/ and records:

- `attribute`: a chain below a name `trt` or `tensorrt` (or a local alias of one):
  `trt.BuilderFlag.GPU_FALLBACK`, `severity.ERROR` after `severity = trt.ILogger.Severity`;
  `create(trt, "Runtime")` counts as a call of `trt.Runtime` with the logger;
- `member`: a method or property of a TensorRT object, found through the variable names in
  RECEIVERS (`builder.create_network(flags)`), or of what such a call returns
  (`config.get_timing_cache().serialize()`; the verifier reads the return type from the
  binding's signature); `set` for an assigned property (`config.DLA_core = 0`);
- `override`: a method of a class deriving from a TensorRT class (`log` of an ILogger);
- `probe`: `hasattr(x, "N")` / `getattr(x, "N", default)`, which may find nothing.

A call records its positional count and keyword names; `check(label, f, *args,
must_succeed=...)` is a call of `f`. A use carries the guards it sits behind: the
`Capabilities` fields (`if capabilities.fp16_flag:`) and hasattr/getattr probes of the
enclosing `if` (or conditional expression) tests, and of the getattr alias it goes through.

`verify(trt, uses)` runs where the real module imports (a subprocess, see
tests/helpers/tensorrt_probe.py): each use whose guards all hold on this module must exist,
take the arguments given (pybind11 signatures from the docstrings), be settable when set, and
be overridable with the arity given. A use behind a guard that does not hold may be absent.
"""

from __future__ import annotations

import ast
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOTS = frozenset({"trt", "tensorrt"})
SCANNED = ("runtime", "export")

# What a variable holds, by file and enclosing class ("*": anywhere in the file). Only the
# variables that hold TensorRT objects; the uses themselves are found in the source.
RECEIVERS: dict[str, dict[str, dict[str, str]]] = {
    "export/engine.py": {"*": {
        "builder": "Builder", "config": "IBuilderConfig", "network": "INetworkDefinition",
        "parser": "OnnxParser", "profile": "IOptimizationProfile",
    }},
    "runtime/backends/tensorrt_backend.py": {"EngineRunner": {
        "self._runtime": "Runtime", "engine": "ICudaEngine", "self.engine": "ICudaEngine",
        "self.context": "IExecutionContext",
    }},
}
CAPABILITY_NAMES = frozenset({"capabilities", "caps"})  # variables holding export.engine.Capabilities


@dataclass(frozen=True)
class Use:
    """One use. owner: dotted class path ("" for the module; "X.m()" for what X.m returns);
    positional: argument count of a call (-1: not a call); guards: ("capability", field) or
    ("probe", "Owner.NAME") pairs that all hold wherever the use runs."""

    kind: str
    owner: str
    name: str
    where: str
    positional: int = -1
    keywords: tuple[str, ...] = ()
    guards: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        return f"{self.owner}.{self.name}" if self.owner else self.name


def _chain(node: ast.AST) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return [node.id, *reversed(parts)] if isinstance(node, ast.Name) else None


@dataclass
class _Scanner(ast.NodeVisitor):
    filename: str
    receivers: dict[str, dict[str, str]]
    uses: list[Use] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    aliases: dict[str, tuple[str, tuple]] = field(default_factory=dict)  # name -> (trt chain, guards)
    guards: list[tuple[str, str]] = field(default_factory=list)
    done: set[int] = field(default_factory=set)

    # --- what an expression is -------------------------------------------------------------
    def trt_path(self, node: ast.AST) -> tuple[list[str], tuple] | None:
        """(['BuilderFlag', 'FP16'], alias guards) for an expression naming TensorRT API."""
        chain = _chain(node)
        if not chain:
            return None
        if chain[0] in ROOTS:
            return chain[1:], ()
        if chain[0] in self.aliases:
            path, guards = self.aliases[chain[0]]
            return [*filter(None, path.split(".")), *chain[1:]], guards
        return None

    def receiver(self, node: ast.AST) -> str | None:
        """The TensorRT type of a receiver expression, or None."""
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = self.receiver(node.func.value)
            return f"{owner}.{node.func.attr}()" if owner else None
        text = ast.unparse(node)
        scope = self.classes[-1] if self.classes else ""
        return self.receivers.get(scope, {}).get(text) or self.receivers.get("*", {}).get(text)

    def add(self, kind, owner, name, node, positional=-1, keywords=(), extra_guards=()) -> None:
        guards = tuple(sorted(set(self.guards) | set(extra_guards)))
        self.uses.append(Use(kind, owner, name, f"{self.filename}:{node.lineno}", positional, tuple(keywords), guards))

    def record(self, node: ast.Attribute, positional: int = -1, keywords=()) -> bool:
        """Record `node` as a use when it is one; True if it was."""
        found = self.trt_path(node)
        if found and found[0]:
            path, guards = found
            if path[-1] == "__init__" and positional > 0:
                positional -= 1  # `trt.ILogger.__init__(self)`
            kind = "set" if isinstance(node.ctx, ast.Store) else "attribute"
            self.add(kind, ".".join(path[:-1]), path[-1], node, positional, keywords, guards)
            self.done.update(id(n) for n in ast.walk(node))
            return True
        owner = self.receiver(node.value)
        if owner:
            kind = "set" if isinstance(node.ctx, ast.Store) else "member"
            self.add(kind, owner, node.attr, node, positional, keywords)
            self.done.add(id(node))
            return True
        return False

    def positive_guards(self, test: ast.AST) -> list[tuple[str, str]]:
        """Guards that hold wherever `test` is true: its `and` operands that read a
        Capabilities field or are a hasattr probe of TensorRT."""
        if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
            return [g for value in test.values for g in self.positive_guards(value)]
        if isinstance(test, ast.Attribute) and isinstance(test.value, ast.Name) and test.value.id in CAPABILITY_NAMES:
            return [("capability", test.attr)]
        probe = self.probe_of(test)
        return [("probe", probe)] if probe else []

    def probe_of(self, node: ast.AST) -> str | None:
        """'BuilderFlag.FP16' for `hasattr(trt.BuilderFlag, "FP16")` or a getattr with a default."""
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            return None
        if node.func.id not in ("hasattr", "getattr") or len(node.args) < 2 + (node.func.id == "getattr"):
            return None
        target, name = node.args[0], node.args[1]
        if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
            return None
        found = self.trt_path(target)
        owner = ".".join(found[0]) if found else self.receiver(target)
        return None if owner is None else f"{owner}.{name.value}".lstrip(".")

    # --- visitors ------------------------------------------------------------------------------
    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for base in node.bases:
            found = self.trt_path(base)
            if found:
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and not item.name.startswith("__"):
                        self.add("override", ".".join(found[0]), item.name, item, len(item.args.args) - 1, (), found[1])
        self.classes.append(node.name)
        self.generic_visit(node)
        self.classes.pop()

    def visit_If(self, node: ast.If | ast.IfExp) -> None:
        self.visit(node.test)
        pushed = self.positive_guards(node.test)
        self.guards.extend(pushed)
        for child in node.body if isinstance(node.body, list) else [node.body]:
            self.visit(child)
        del self.guards[len(self.guards) - len(pushed):]
        for child in node.orelse if isinstance(node.orelse, list) else [node.orelse]:
            self.visit(child)

    visit_IfExp = visit_If

    def visit_Assign(self, node: ast.Assign) -> None:
        target = node.targets[0]
        targets = target.elts if isinstance(target, ast.Tuple) else [target]
        values = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
        if len(targets) == len(values):
            for name, value in zip(targets, values):
                if not isinstance(name, ast.Name):
                    continue
                probe = self.probe_of(value)
                if probe and isinstance(value.func, ast.Name) and value.func.id == "getattr":
                    self.aliases[name.id] = (probe, (("probe", probe),))
                elif isinstance(value, ast.Attribute) and self.trt_path(value):
                    path, guards = self.trt_path(value)
                    self.aliases[name.id] = (".".join(path), guards)
                else:
                    self.aliases.pop(name.id, None)  # the name now holds something else
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func, keywords = node.func, [k.arg for k in node.keywords if k.arg]
        probe = self.probe_of(node)
        if probe:
            owner, _, name = probe.rpartition(".")
            self.add("probe", owner, name, node)
        elif isinstance(func, ast.Name) and func.id == "check" and len(node.args) >= 2:
            if isinstance(node.args[1], ast.Attribute):
                self.record(node.args[1], len(node.args) - 2, [k for k in keywords if k != "must_succeed"])
        elif isinstance(func, ast.Name) and func.id == "create" and len(node.args) >= 2:
            factory = node.args[1]  # create(trt, "Runtime"): trt.Runtime(logger)
            if self.trt_path(node.args[0]) is not None and isinstance(factory, ast.Constant):
                self.add("attribute", "", factory.value, node, 1)
        elif isinstance(func, ast.Attribute) and id(func) not in self.done:
            self.record(func, len(node.args), keywords)
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if id(node) in self.done or not self.record(node):
            self.generic_visit(node)


def scan_source(source: str, filename: str) -> list[Use]:
    """Every TensorRT use in one module; `filename` relative to the project root."""
    scanner = _Scanner(filename, RECEIVERS.get(filename, {}))
    scanner.visit(ast.parse(source, filename))
    return scanner.uses


def scan_tree(root: Path) -> list[Use]:
    """Every TensorRT use in the project's runtime/ and export/ modules."""
    uses = []
    for folder in SCANNED:
        for path in sorted((root / folder).rglob("*.py")):
            uses += scan_source(path.read_text(), path.relative_to(root).as_posix())
    return uses


def to_json(uses: list[Use]) -> list[dict]:
    return [asdict(use) for use in uses]


def from_json(rows: list[dict]) -> list[Use]:
    return [Use(**{**row, "keywords": tuple(row["keywords"]), "guards": tuple(map(tuple, row["guards"]))})
            for row in rows]


# --- against a real module ---------------------------------------------------------------------

_SIGNATURE = re.compile(r"^\s*(?:\d+\.\s*)?(\w+)\((.*)\)\s*->\s*([\w.]+)", re.MULTILINE)


def _parameters(text: str) -> list[tuple[str, bool]]:
    """[(name, has_default)] of one pybind11 signature's parameter list, without self."""
    parts, depth, current = [], 0, ""
    for char in text + ",":
        depth += char in "[(" and 1 or (-1 if char in "])" else 0)
        if char == "," and depth == 0:
            if current.strip():
                parts.append(current.strip())
            current = ""
        else:
            current += char
    found = [(part.split(":")[0].split("=")[0].strip(), "=" in part) for part in parts]
    return [(name, default) for name, default in found if name not in ("self", "*args", "**kwargs")]


def signatures(function) -> list[tuple[list[tuple[str, bool]], str]]:
    """The pybind11 overloads in `function`'s docstring: [(parameters, return type)]."""
    return [(_parameters(m.group(2)), m.group(3)) for m in _SIGNATURE.finditer(getattr(function, "__doc__", "") or "")
            if m.group(2).strip() not in ("*args, **kwargs",)]


def resolve(trt, dotted: str):
    """The object `dotted` names in `trt`; 'X.m()' is the class X.m returns."""
    value = trt
    for part in filter(None, dotted.split(".")):
        if part.endswith("()"):
            returns = {ret for _, ret in signatures(getattr(value, part[:-2]))}
            if len(returns) != 1:
                raise AttributeError(f"cannot tell what {dotted} returns ({sorted(returns)})")
            value = getattr(trt, returns.pop().rsplit(".", 1)[-1])
        else:
            value = getattr(value, part)
    return value


def _accepts(parameters: list[tuple[str, bool]], positional: int, keywords: tuple[str, ...]) -> bool:
    names = [name for name, _ in parameters]
    if positional > len(names) or any(k not in names[positional:] for k in keywords):
        return False
    given = set(names[:positional]) | set(keywords)
    return all(name in given or default for name, default in parameters)


def problem(trt, use: Use) -> str | None:
    """What `trt` lacks for `use`, or None."""
    import inspect

    try:
        owner = resolve(trt, use.owner)
    except AttributeError as exc:
        return f"no {use.owner} ({exc})"
    if not hasattr(owner, use.name):
        return f"no {use.key}"
    if use.kind == "probe":
        return None
    static = inspect.getattr_static(owner, use.name) if inspect.isclass(owner) else getattr(owner, use.name)
    if use.kind == "set":
        settable = isinstance(static, property) and static.fset is not None
        return None if settable else f"{use.key} cannot be set"
    if use.kind == "override":
        arities = [len(parameters) for parameters, _ in signatures(getattr(owner, use.name))]
        if not arities or use.positional in arities:
            return None
        return f"{use.key} takes {arities} arguments, the override {use.positional}"
    if use.positional < 0:
        return None
    if isinstance(static, property):
        return f"{use.key} is a property, called"
    target = getattr(owner, use.name)
    found = signatures(target.__init__ if inspect.isclass(target) else target)
    if found and not any(_accepts(parameters, use.positional, use.keywords) for parameters, _ in found):
        shown = " | ".join("(" + ", ".join(n for n, _ in parameters) + ")" for parameters, _ in found)
        return f"{use.key} called with {use.positional} positional {list(use.keywords)}; it takes {shown}"
    if not found:
        return f"{use.key}: no signature in its docstring to check the call against"
    return None


def guard_holds(trt, guard: tuple[str, str], capabilities) -> bool:
    kind, what = guard
    if kind == "capability":
        return bool(getattr(capabilities, what))
    owner, _, name = what.rpartition(".")
    try:
        return hasattr(resolve(trt, owner), name)
    except AttributeError:
        return False


def verify(trt, uses: list[Use], capabilities) -> dict:
    """{"bugs": [where: problem], "absent_behind_guards": [key], "checked": n} for `trt`."""
    bugs, absent, checked = [], set(), 0
    for use in uses:
        found = problem(trt, use)
        if use.kind == "probe" and found and found.startswith(f"no {use.key}"):
            continue  # a probe that finds nothing is what probes are for
        if all(guard_holds(trt, guard, capabilities) for guard in use.guards):
            checked += 1
            if found:
                bugs.append(f"{use.where}: {found}")
        elif found:
            absent.add(use.key)
    return {"bugs": bugs, "absent_behind_guards": sorted(absent), "checked": checked}

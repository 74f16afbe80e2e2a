"""The --backend flag and one flag per backend option, made from the registry of backends.

    add_backend_arguments(parser)             # --backend, --threads, --spinning, --device, --precision, ...
    args = parser.parse_args(argv)
    Detector(model, backend=args.backend, options=backend_options(args))

Every flag of a backend option comes from a field of that backend's options class (its
help, flag, choices and parser in the field's metadata: see runtime/backends/base.option),
so an option added there reaches every command with --backend. A flag the command already
has for something else (ssd-eval's --device, the PyTorch device) is given with the
backend's library in front (--openvino-device).
"""

from __future__ import annotations

import argparse
from typing import Any, Mapping

from ssd_edge.runtime.backends import registry

_DESTS = "backend_option_dests"


def add_backend_arguments(parser: argparse.ArgumentParser, several: bool = False, default: str = "auto",
                          help: str | None = None, helps: Mapping[str, str] | None = None) -> None:
    """Add --backend (several: a comma-separated list, checked by the command) and one flag
    per backend option (default None: the backend's own default). helps: {option name: the
    command's own help line for it}, where the command gives the option more to do."""
    names = ", ".join(registry.CHOICES)
    if several:
        parser.add_argument("--backend", default=default, metavar="NAME[,NAME...]",
                            help=help or f"runtime backend: {names}; several joined by commas run side by side "
                                         f"(default: {default})")
    else:
        parser.add_argument("--backend", default=default, choices=registry.CHOICES,
                            help=help or f"runtime backend (default {default})")
    dests = {}
    for name, field in registry.option_fields().items():
        families = registry.families_taking(name)
        flag = registry.option_flag(name)
        if flag in parser._option_string_actions:
            flag = f"--{families[0].lower()}-{flag[2:]}"
        meta = field.metadata
        extra: dict[str, Any] = {"choices": meta["choices"]} if meta.get("choices") else {"type": meta.get("parse")}
        if meta.get("metavar"):
            extra["metavar"] = meta["metavar"]
        text = (helps or {}).get(name) or f"{meta.get('help', name)} [{', '.join(families)}]"
        action = parser.add_argument(flag, default=None, help=text, **extra)
        dests[name] = action.dest
    parser.set_defaults(**{_DESTS: dests})


def backend_options(args: argparse.Namespace) -> dict[str, Any]:
    """{option name: value} of the backend options given on the command line (the others
    left out: each backend keeps its default). The Detector refuses, naming it, an option
    the chosen backend does not take."""
    fields = registry.option_fields()
    given = {}
    for name, dest in getattr(args, _DESTS).items():
        value = getattr(args, dest)
        if value is None:
            continue
        parse = fields[name].metadata.get("parse")
        given[name] = parse(value) if parse is not None and fields[name].metadata.get("choices") else value
    return given


def option_flags(parser: argparse.ArgumentParser) -> dict[str, str]:
    """{backend option name: its flag on `parser`}."""
    dests = parser.get_default(_DESTS) or {}
    by_dest = {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings}
    return {name: by_dest[dest] for name, dest in dests.items()}

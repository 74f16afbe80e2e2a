"""ssd-train / train_ssd.py: train an SSD on a COCO, flat COCO-JSON or Pascal VOC dataset."""

from __future__ import annotations

import argparse
import ast
import functools
import importlib.util
import sys
from pathlib import Path

from ssd_edge.cli import run_command
from ssd_edge.common.errors import require


@functools.lru_cache(maxsize=None)
def _module_tree(module: str) -> ast.Module:
    """The syntax tree of `module` (ssd_edge.X.Y)'s source, found without importing it nor
    its package (ssd_edge.models' __init__ imports torch)."""
    root = Path(importlib.util.find_spec("ssd_edge").origin).parent
    path = root.joinpath(*module.split(".")[1:]).with_suffix(".py")
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def _assigned(module: str, name: str) -> ast.expr:
    for node in _module_tree(module).body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == name and node.value is not None:
            return node.value
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return node.value
    raise LookupError(f"{module}.{name} is not assigned at the top of its module")


@functools.lru_cache(maxsize=None)
def config_defaults() -> dict:
    """TrainConfig's defaults (ssd_edge/training/train.py), so the command line and
    `train(TrainConfig(...))` never disagree: read from its source, as --help must not import
    torch (seconds, or a traceback where only the runtime is installed). A test checks them
    against the imported TrainConfig."""
    for node in _module_tree("ssd_edge.training.train").body:
        if isinstance(node, ast.ClassDef) and node.name == "TrainConfig":
            return {field.target.id: ast.literal_eval(field.value) for field in node.body
                    if isinstance(field, ast.AnnAssign) and field.value is not None}
    raise LookupError("ssd_edge.training.train has no TrainConfig")


def arch_names() -> list[str]:
    """ssd_edge.models.registry.ARCHS' names, read from its source (see config_defaults)."""
    return sorted(ast.literal_eval(key) for key in _assigned("ssd_edge.models.registry", "ARCHS").keys)


def matcher_names() -> tuple[str, ...]:
    """ssd_edge.training.matching.MATCHERS, read from its source (see config_defaults)."""
    return ast.literal_eval(_assigned("ssd_edge.training.matching", "MATCHERS"))


class _DefaultsHelp(argparse.HelpFormatter):
    """Every option's help ends with its default unless it says it itself (flags without a
    value and options defaulting to nothing excepted)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "(default" in text or action.nargs == 0 or action.default in (None, argparse.SUPPRESS):
            return text
        return f"{text} (default %(default)s)".lstrip()


def build_parser() -> argparse.ArgumentParser:
    """The command line; every default is TrainConfig's (set from it at the end)."""
    p = argparse.ArgumentParser(prog="ssd-train", description=__doc__, formatter_class=_DefaultsHelp,
                                epilog="Defaults: AdamW, lr 1e-3 peak after a 1-epoch linear warm-up, cosine "
                                       "decay to 0, classification bias prior 0.01 (see README, Training).")
    p.add_argument("--arch", choices=arch_names(), help="architecture")
    p.add_argument("--datapath",
                   help="dataset root (COCO, flat or VOC layout); with --resume, the run's own by default")
    p.add_argument("--epochs", type=int, help="passes over the training images")
    p.add_argument("--batch-size", type=int, help="images per process and step")
    p.add_argument("--lr", type=float, help="peak learning rate (after warm-up)")
    p.add_argument("--optimizer", choices=("sgd", "adamw"), help="AdamW, or SGD with Nesterov momentum")
    p.add_argument("--momentum", type=float, help="SGD only")
    p.add_argument("--weight-decay", type=float, help="decoupled (AdamW) or L2 (SGD)")
    p.add_argument("--warmup-epochs", type=float, help="linear warm-up before the cosine decay")
    p.add_argument("--imgsz", type=int, help="input side in pixels (default: the architecture's)")
    p.add_argument("--workers", type=int, help="data-loading processes")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--seed", type=int, help="random seed (data order, augmentation, initialisation)")
    p.add_argument("--matcher", choices=matcher_names(), help="how default boxes are matched to objects")
    p.add_argument("--foreground-prior", type=float,
                   help="a new model's classification biases start at this foreground probability "
                        "(RetinaNet's prior; 0 keeps them at zero)")
    p.add_argument("--pretrained-backbone", metavar="PATH",
                   help="torchvision ImageNet classifier weights (a local file)")
    p.add_argument("--weights", metavar="PATH", help="start from our checkpoint or a torchvision COCO state dict")
    p.add_argument("--resume", metavar="PATH",
                   help="continue an interrupted run exactly, with the settings it stores (epochs, optimizer, lr, "
                        "--save...; flags that contradict them are refused) and its optimizer, schedule and RNG state")
    p.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    p.add_argument("--qat", action="store_true",
                   help="quantization-aware fine-tuning of --weights for TensorRT INT8 (a few epochs at a small "
                        "--lr, e.g. 5e-5); ssd-export --format int8 then writes its QDQ ONNX, no calibration")
    p.add_argument("--save",
                   help="checkpoint path; best, metrics.csv and curves.png go beside it")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.add_argument("--threads", type=_threads, metavar="N|auto",
                   help="CPU threads: auto takes the CPUs that other work leaves free (affinity, cgroup quota, "
                        "load average), or OMP_NUM_THREADS when set; a resumed run keeps its run's")
    p.set_defaults(**config_defaults())
    return p


def _threads(value: str) -> str | int:
    """--threads: 'auto' or a positive number."""
    if value == "auto":
        return value
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise argparse.ArgumentTypeError(f"takes auto or a positive number, not {value!r}")


class _Unset:
    """Stands for an option not on the command line (argparse fills in only missing names)."""


def parse(argv: list[str] | None) -> tuple[dict, set[str]]:
    """The settings (TrainConfig's fields) and the names of those the command line gave."""
    p = build_parser()
    names = [*config_defaults(), "datapath"]
    given = vars(p.parse_args(argv, argparse.Namespace(**{name: _Unset for name in names})))
    if given["datapath"] is _Unset and given["resume"] is _Unset:
        p.error("the following arguments are required: --datapath (or --resume)")
    settings = {name: p.get_default(name) if value is _Unset else value for name, value in given.items()}
    return settings, {name for name, value in given.items() if value is not _Unset}


def main(argv: list[str] | None = None) -> int:
    # before torch loads OpenMP, which reads it once: idle threads sleep instead of spinning,
    # so a machine shared with other work slows training in proportion (training/threads.py)
    from ssd_edge.training.threads import prefer_passive_waiting

    prefer_passive_waiting()
    settings, given = parse(argv)

    def work():
        for package in ("torch", "torchvision"):  # one line naming the extra, not a traceback
            require(package, "train", "ssd-train")
        from ssd_edge.training.train import TrainConfig, train

        config = TrainConfig(**settings)
        if config.resume:
            from ssd_edge.training.resume import resume_run

            config = resume_run(config, given)
        return train(config)

    run_command("ssd-train", work, interrupted="interrupted; the last checkpoint written is intact")
    return 0


if __name__ == "__main__":
    sys.exit(main())

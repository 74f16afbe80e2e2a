"""ssd-train --help without torch (fast, and possible on a runtime-only install), showing
every default, which it reads from TrainConfig's source: checked here against the classes."""

import subprocess
import sys
from dataclasses import fields

import pytest

from ssd_edge.cli.train import arch_names, build_parser, config_defaults, matcher_names

# A Python that cannot import torch, torchvision or scipy: --help must not need them.
NO_TORCH = ("import sys; sys.modules.update(torch=None, torchvision=None, scipy=None); "
            "from ssd_edge.cli.train import main; sys.exit(main(['--help']))")


def test_defaults_read_from_source_are_train_configs():
    pytest.importorskip("torch")
    from ssd_edge.models.registry import ARCHS
    from ssd_edge.training.matching import MATCHERS
    from ssd_edge.training.train import TrainConfig

    assert config_defaults() == {f.name: f.default for f in fields(TrainConfig) if f.name != "datapath"}
    assert arch_names() == sorted(ARCHS)
    assert matcher_names() == MATCHERS


def test_help_imports_no_torch_and_shows_every_default():
    done = subprocess.run([sys.executable, "-c", NO_TORCH], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())  # argparse wraps lines
    for option in build_parser()._actions:
        default = option.default
        if option.nargs == 0 or default is None or option.dest in ("help", "datapath"):
            continue
        assert f"(default {default})" in text or "(default:" in option.help, option.dest
    assert "(default 0.001)" in text and "(default hungarian_iou)" in text and "(default mobilenetv3_ssd)" in text
    assert "torch" not in [line for line in done.stderr.splitlines() if "Error" in line]

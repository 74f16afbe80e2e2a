"""Training runs for the tests."""

from __future__ import annotations

import pytest

import ssd_edge.training.train as training


def train_interrupted_after_epoch_one(monkeypatch: pytest.MonkeyPatch, config: training.TrainConfig) -> None:
    """Run train(config) as a Ctrl-C right after its first epoch was saved would stop it: a
    KeyboardInterrupt from the first epoch's summary line, which is printed after the save."""
    summary_line = training.summary_line

    def interrupt_after_epoch_one(row, epochs):
        if row["epoch"] == 1:
            raise KeyboardInterrupt
        return summary_line(row, epochs)

    monkeypatch.setattr(training, "summary_line", interrupt_after_epoch_one)
    with pytest.raises(KeyboardInterrupt):
        training.train(config)
    monkeypatch.setattr(training, "summary_line", summary_line)

"""ssd-bench --plot: the log axis' tick labels never run together (issue 27 saw
'5006007008009'), whatever range the latencies span."""

import numpy as np
import pytest

from ssd_edge.bench.plot import plot_latencies

matplotlib = pytest.importorskip("matplotlib")


def _report(low: float, high: float) -> dict:
    rng = np.random.default_rng(0)
    rows = [{"batch": 1, "name": name, "kind": "model", "format": "ONNX",
             "latencies_ms": list(np.exp(rng.uniform(np.log(low), np.log(high), 200)))}
            for name in ("a.onnx", "b.onnx")]
    return {"settings": {"batches": [1], "threads": 2}, "results": rows, "machine": {"cpu": "test CPU"}}


@pytest.mark.parametrize("low, high", [(5, 900), (500, 990), (0.5, 3000), (40, 1200)])
def test_log_axis_labels_do_not_overlap(tmp_path, low, high, monkeypatch):
    import matplotlib.pyplot as plt

    figures, close = [], plt.close
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to measure its labels
    plot_latencies(_report(low, high), tmp_path / "bench.png")
    fig = figures[0]
    fig.canvas.draw()
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    shown = [(t.get_text(), t.get_window_extent(renderer)) for t in
             ax.xaxis.get_majorticklabels() + ax.xaxis.get_minorticklabels()
             if t.get_text() and t.get_visible() and low * 0.5 <= t.get_position()[0] <= high * 2]
    inside = [(text, box) for text, box in shown if ax.get_window_extent(renderer).x0 - 1 <= box.x0
              and box.x1 <= ax.get_window_extent(renderer).x1 + 1]
    assert len(inside) >= 2, [text for text, _ in shown]
    boxes = sorted((box.x0, box.x1, text) for text, box in inside)
    for (x0, x1, a), (y0, _, b) in zip(boxes, boxes[1:]):
        assert x1 < y0, f"tick labels {a!r} and {b!r} overlap for latencies {low}-{high} ms"
    assert all(text.replace(".", "").isdigit() for text, _ in inside)
    close(fig)

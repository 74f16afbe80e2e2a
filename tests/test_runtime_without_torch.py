import subprocess
import sys
import textwrap


def test_runtime_imports_and_postprocesses_without_torch():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        sys.modules["torchvision"] = None
        import numpy as np
        import ssd_edge.runtime as rt
        from ssd_edge.runtime.spec import DefaultBoxConfig
        spec = rt.ModelSpec(
            arch="mobilenetv3_ssd", input_size=(64, 64), class_names=("bg", "a", "b"),
            default_boxes=DefaultBoxConfig(feature_maps=((4, 4), (2, 2)), scales=(0.2, 0.5, 1.0),
                                           aspect_ratios=((2.0,), (2.0,))),
        )
        priors = rt.default_boxes(spec)
        rng = np.random.default_rng(0)
        locs = rng.normal(size=(1, len(priors), 4)).astype(np.float32)
        confs = rng.normal(size=(1, len(priors), 3)).astype(np.float32) * 3
        dets = rt.postprocess(locs, confs, priors, [(64, 64)], rt.PostprocessConfig.from_spec(spec))
        assert len(dets[0].boxes) > 0
        assert not any(name == "torch" or name.startswith("torch.") for name, m in sys.modules.items() if m)
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"

"""What `ssd-export` does: weights (or an exported ONNX) -> ONNX, INT8 ONNX, TensorRT engine.

weights (.pt: ours or torchvision's COCO SSDLite320 / SSD300 state dict)
  -> <name>.onnx        FP32, simplified, ModelSpec in metadata, parity-checked against PyTorch
  -> <name>.int8.onnx   QDQ, calibrated on --calib-data, compared against the FP32 ONNX; with a
                        labelled --calib-data (a dataset), the calibration method chosen by mAP
                        and the most sensitive layers kept float until within the budget
                        (export/int8_search.py); a second flavour as <name>.int8-<flavour>.onnx
  -> <name>.accuracy.md/.json  mAP of FP32, FP16 and bf16 (emulated), INT8 per flavour, verdicts
  -> <name>.engine      TensorRT, + <name>.engine.json

An exported `.onnx` may stand in for the weights (to quantize it or build an engine on a
machine without torch, such as a Jetson). torch is imported only to read `.pt` weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ssd_edge.common.atomic import atomic_path
from ssd_edge.common.errors import MissingDependency
from ssd_edge.common.output_paths import OutputFolder, check_outputs
from ssd_edge.export.dependencies import check_dependencies
from ssd_edge.export.onnx_model import ExportError, batch_size, load_onnx, metadata, spec_of
from ssd_edge.runtime.model_file import QUANTIZATION_KEY, sidecar_path
from ssd_edge.runtime.parity import ParityReport
from ssd_edge.runtime.spec import ModelSpec

FORMATS = ("onnx", "int8", "engine")
PARITY_IMAGES = 4
DYNAMIC_ENGINE_BATCH = 8  # the largest batch of a dynamic engine when --batch is not given
Echo = Callable[[str], None]


@dataclass(frozen=True)
class ExportOptions:
    """The arguments of `ssd-export`, named as Ultralytics' exporter names them.

    imgsz: (H, W), None for the model's own. batch: the static batch (None: 1, or an
    exported ONNX's own), or with a dynamic batch the largest an engine accepts (None: 8).
    int8_flavour: None picks `tensorrt` when an INT8 engine is built, else `cpu`; a comma
    list ("cpu,tensorrt") quantizes each: the first is <name>.int8.onnx, the others
    <name>.int8-<flavour>.onnx, and the accuracy table has a row for each.
    calib_methods: the calibration methods tried (None: minmax and percentile with a labelled
    --calib-data, else minmax). select_images: labelled images after the calibration ones
    that choose the method and the float layers. int8_budget: the drop from FP32 allowed
    in mAP@0.5 and mAP@0.5:0.95. accuracy: end with the accuracy table (needs a labelled
    --calib-data; measured on its val split, else on the selection images).
    workspace: GiB for the TensorRT builder. output: folder (None: beside the weights).
    """

    weights: Path
    arch: str | None = None
    formats: tuple[str, ...] = ("onnx",)
    imgsz: tuple[int, int] | None = None
    batch: int | None = None
    dynamic: bool = False
    opset: int | None = None
    simplify: bool = True
    half: bool = False
    int8: bool = False
    calib_data: Path | None = None
    calib_images: int = 300
    int8_flavour: str | None = None
    workspace: float | None = None
    dla_core: int | None = None
    output: Path | None = None
    progress: bool = True
    calib_methods: tuple[str, ...] | None = None
    select_images: int = 50
    int8_budget: float = 0.003
    accuracy: bool = True

    def __post_init__(self) -> None:
        """Check the options against each other before any work (formats deduplicated);
        every refusal names the option to change."""
        formats = tuple(dict.fromkeys(self.formats))
        unknown = [f for f in formats if f not in FORMATS]
        if unknown or not formats:
            raise ExportError(f"unknown format(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(FORMATS)}")
        engine = "engine" in formats
        for flag, given in (("--half", self.half), ("--int8", self.int8), ("--dla-core", self.dla_core is not None),
                            ("--workspace", self.workspace is not None)):
            if given and not engine:
                hint = " (an INT8 ONNX is --format int8)" if flag == "--int8" else ""
                raise ExportError(f"{flag} applies to TensorRT engines: add --format engine{hint}")
        if self.dla_core is not None and not (self.half or self.int8):
            raise ExportError("DLA runs FP16 and INT8 layers only: add --half or --int8 to use --dla-core")
        if self.half and self.int8:
            raise ExportError("--half and --int8 together: an INT8 engine keeps its unquantized layers as the QDQ "
                              "graph has them; choose one")
        if self.int8 and self.flavour != "tensorrt":
            raise ExportError(f"--int8-flavour {self.int8_flavour}: an INT8 TensorRT engine needs the "
                              "'tensorrt' flavour (first)")
        check_dependencies(self)  # what these options need installed: one line naming the extra
        _check_int8_options(self)
        for flag, value, low in (("--batch", self.batch, 1), ("--calib-images", self.calib_images, 1),
                                 ("--dla-core", self.dla_core, 0)):
            if value is not None and value < low:
                raise ExportError(f"{flag} must be at least {low}, got {value}")
        if self.imgsz is not None and (len(self.imgsz) != 2 or min(self.imgsz) < 1):
            raise ExportError(f"--imgsz must be one positive number or H W, got {' '.join(map(str, self.imgsz))}")
        if self.workspace is not None and self.workspace <= 0:
            raise ExportError(f"--workspace must be a positive number of GiB, got {self.workspace}")
        if self.from_onnx and "onnx" in formats:
            raise ExportError(f"{self.weights}: already an ONNX model; ask for --format int8 or engine")
        object.__setattr__(self, "formats", formats)

    @property
    def from_onnx(self) -> bool:
        return Path(self.weights).suffix.lower() == ".onnx"

    @property
    def name(self) -> str:
        stem = Path(self.weights).stem
        return stem[: -len(".int8")] if stem.endswith(".int8") else stem

    @property
    def output_dir(self) -> Path:
        return Path(self.output) if self.output is not None else Path(self.weights).parent

    @property
    def flavours(self) -> tuple[str, ...]:
        if self.int8_flavour is not None:
            return tuple(dict.fromkeys(part.strip() for part in self.int8_flavour.split(",") if part.strip()))
        return ("tensorrt",) if self.int8 else ("cpu",)

    @property
    def flavour(self) -> str:
        return self.flavours[0]


def _check_int8_options(options: ExportOptions) -> None:
    from ssd_edge.export.quantize import FLAVOURS, METHODS

    unknown = [f for f in options.flavours if f not in FLAVOURS]
    unknown += [m for m in options.calib_methods or () if m not in METHODS]
    if unknown or not options.flavours or options.calib_methods == ():
        raise ExportError(f"unknown INT8 flavour or calibration method {', '.join(unknown) or '(none)'}; flavours: "
                          f"{', '.join(FLAVOURS)}; methods: {', '.join(METHODS)}")
    if options.int8_budget < 0 or options.select_images < 1:
        raise ExportError(f"--int8-budget must be >= 0 and --select-images >= 1, got {options.int8_budget} and "
                          f"{options.select_images}")


@dataclass
class ExportResult:
    files: list[Path] = field(default_factory=list)
    parity: ParityReport | None = None
    int8_vs_fp32: ParityReport | None = None
    int8_choices: list = field(default_factory=list)  # export.int8_search.Int8Choice, one per flavour
    accuracy: object = None  # evaluation.precision.AccuracyTable


def size_text(path: Path) -> str:
    size = path.stat().st_size
    return f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"


def run_export(options: ExportOptions, echo: Echo = lambda line: None) -> ExportResult:
    """Do everything `options` asks, in order; `echo` receives one line per step and per
    file written. Raises ExportError with one clear line on bad input (ParityError when the
    ONNX disagrees with PyTorch), TensorRTUnavailable before any work when an engine cannot
    be built here."""
    environment = None
    if "engine" in options.formats:
        from ssd_edge.export.engine import build_environment

        environment = build_environment()  # probed once, before any work, and handed to the build
    source = _onnx_source(options) if options.from_onnx else None
    model = None if options.from_onnx else _load_model(options)  # read once: every export of the weights uses it
    qat = _is_qat(options, model)  # its INT8 ONNX is its own QDQ export: no calibration
    int8_wanted = ("int8" in options.formats or options.int8) and not (source and source.quantized)
    quantize = int8_wanted and not qat
    calibration = _calibration_images(options) if quantize else []
    measured = quantize or (qat and int8_wanted and options.calib_data is not None)  # a QAT file's table too
    labelled = _labelled(options, len(calibration), echo) if measured else None
    out = options.output_dir
    planned = {"onnx": out / f"{options.name}.onnx" if source is None else None,
               "int8": out / f"{options.name}.int8.onnx" if int8_wanted else None,
               "engine": out / f"{options.name}.engine" if "engine" in options.formats else None}
    more_int8 = {f: out / f"{options.name}.int8-{f}.onnx" for f in options.flavours[1:]} if quantize else {}
    reports = [out / f"{options.name}.accuracy.{kind}" for kind in ("md", "json")] \
        if labelled is not None and options.accuracy else []
    check_outputs({f"the {kind} output": path for kind, path in planned.items()}
                  | {"the engine's sidecar": sidecar_path(planned["engine"]) if planned["engine"] else None}
                  | {f"the {f} INT8 output": path for f, path in more_int8.items()}
                  | {f"the accuracy report {path.suffix}": path for path in reports},
                  {"--weights": options.weights, "--calib-data": calibration})
    result = ExportResult()
    parity_images = _ParityImages(options)
    with OutputFolder(out):  # a failed export leaves no empty folder behind
        if source is None:
            source = _export_fp32(options, model, planned["onnx"], parity_images, result, echo)
        engine_source = source
        if quantize:
            int8 = _quantize(options, source, calibration, planned["int8"], parity_images, result, echo,
                             options.flavour, labelled)
            engine_source = int8 if options.int8 else source
            for flavour, path in more_int8.items():
                _quantize(options, source, calibration, path, parity_images, result, echo, flavour, labelled)
            if reports:
                _accuracy_table(options, source, [planned["int8"], *more_int8.values()], labelled, result, echo)
        elif int8_wanted:  # qat
            int8 = _export_qat(options, model, source, planned["int8"], parity_images, result, echo)
            engine_source = int8 if options.int8 else source
            if reports:
                _accuracy_table(options, source, [planned["int8"]], labelled, result, echo)
        if "engine" in options.formats:
            _build(options, engine_source, planned["engine"], environment, result, echo)
    return result


@dataclass(frozen=True)
class _Source:
    """An ONNX the export makes something from, with what is known of it, so nothing parses
    it again: its ModelSpec, fixed batch (None: dynamic), whether it is an INT8 QDQ model,
    and its loaded ModelProto where one was loaded (None: the engine build loads it)."""

    path: Path
    spec: ModelSpec
    batch: int | None
    quantized: bool = False
    proto: object = field(default=None, compare=False, repr=False)


class _ParityImages:
    """The parity images (BGR), decoded once per export: the FP32 ONNX against PyTorch and
    the INT8 ONNX against the FP32 one see the same list."""

    def __init__(self, options: ExportOptions) -> None:
        self.options = options
        self.images: list | None = None

    def take(self, count: int) -> list:
        if self.images is None or len(self.images) != count:
            self.images = _parity_images(self.options, count)
        return self.images


def _written(path: Path, result: ExportResult, echo: Echo) -> None:
    result.files.append(path)
    echo(f"wrote {path} ({size_text(path)})")


def _onnx_source(options: ExportOptions) -> _Source:
    """An exported ONNX given as --weights: check it fits the options."""
    path = Path(options.weights)
    proto = load_onnx(path)
    spec = spec_of(proto, path)
    quantized = QUANTIZATION_KEY in metadata(proto)
    if quantized and (options.formats != ("engine",) or not options.int8):
        raise ExportError(f"{path}: an INT8 QDQ model; it can only become an INT8 engine (--format engine --int8)")
    if options.imgsz is not None and tuple(options.imgsz) != tuple(spec.input_size):
        raise ExportError(f"{path}: exported at {spec.input_size[0]}x{spec.input_size[1]}; "
                          "--imgsz needs the weights (.pt)")
    fixed = batch_size(proto)
    if options.dynamic and fixed:
        raise ExportError(f"{path}: exported with a fixed batch of {fixed}; --dynamic needs the weights (.pt)")
    if fixed and options.batch not in (None, fixed):
        raise ExportError(f"{path}: exported with a fixed batch of {fixed}; "
                          f"--batch {options.batch} needs the weights (.pt)")
    return _Source(path, spec, fixed, quantized, proto)


def _calibration_images(options: ExportOptions) -> list[Path]:
    from ssd_edge.runtime.image_io import list_images

    if options.calib_data is None:
        raise ExportError("INT8 needs calibration images: pass --calib-data DIR "
                          "(a few hundred images like those the model will see)")
    return list_images(options.calib_data, options.calib_images, recursive=True)


def _at_input_size(model, imgsz: tuple[int, int] | None):
    """The same weights built for another input size (SSD convolutions do not depend on it;
    the default boxes do, and are recomputed). Everything else in the spec stays."""
    from ssd_edge.models.registry import model_from_spec

    spec = model.spec
    if imgsz is None or tuple(imgsz) == tuple(spec.input_size):
        return model
    size = (int(imgsz[0]), int(imgsz[1]))
    try:
        resized = model_from_spec(spec, input_size=size)
    except ValueError as exc:
        raise ExportError(f"--imgsz {imgsz[0]} {imgsz[1]}: {exc}") from None
    from ssd_edge.training.qat import prepare_qat, qat_record

    if qat_record(model) is not None:  # the same QAT structure (folded BatchNorms, fake-quantized convolutions)
        prepare_qat(resized)
        resized.qat_record = qat_record(model)
    resized.load_state_dict(model.state_dict())
    return resized


def _load_model(options: ExportOptions):
    try:
        from ssd_edge.checkpoint import load_model
        from ssd_edge.models.registry import ARCHS
    except ImportError as exc:
        raise MissingDependency(
            f"{options.weights}: reading .pt weights needs torch ({exc}); install ssd-edge[train,export] "
            "or give an exported .onnx instead"
        ) from None
    if options.arch is not None and options.arch not in ARCHS:
        raise ExportError(f"unknown --arch {options.arch!r}; choose from {', '.join(sorted(ARCHS))}")
    model = load_model(options.weights, options.arch)
    if options.arch is not None and model.spec.arch != options.arch:
        raise ExportError(f"{options.weights}: holds a {model.spec.arch} model, "
                          f"not the --arch {options.arch} asked for")
    return _at_input_size(model, options.imgsz)


def _export_fp32(
    options: ExportOptions, model, path: Path, images: _ParityImages, result: ExportResult, echo: Echo
) -> _Source:
    """Export `model` (the weights', `_load_model`) and parity-check; `path` is replaced only
    when the new ONNX passes."""
    from ssd_edge.export.parity import FP32_RTOL, ParityError
    from ssd_edge.export.to_onnx import DEFAULT_OPSET, export_onnx

    batch = options.batch or 1
    height, width = model.spec.input_size
    echo(f"exporting {model.spec.arch} at {height}x{width}, batch {'dynamic' if options.dynamic else batch}")
    with atomic_path(path) as tmp, _float_network(model):
        export_onnx(model, tmp, batch=1 if options.dynamic else batch, dynamic=options.dynamic,
                    opset=options.opset or DEFAULT_OPSET, simplified=options.simplify)
        result.parity = _parity(options, model, tmp, images)
        echo(f"parity (onnxruntime CPU vs PyTorch): {result.parity.summary()}")
        if not result.parity.within(FP32_RTOL):
            raise ParityError(f"{path}: not written: the ONNX differs from the PyTorch model past the relative "
                              f"tolerance {FP32_RTOL:g} ({result.parity.summary()})")
    _written(path, result, echo)
    return _Source(path, model.spec, None if options.dynamic else batch)


def _is_qat(options: ExportOptions, model) -> bool:
    """Whether `model` (None for an ONNX --weights) is a quantization-aware fine-tune's, built
    so by its checkpoint (ssd-train --qat): its INT8 ONNX is then its own QDQ export,
    tensorrt flavour; no other flavour."""
    if model is None:
        return False
    from ssd_edge.training.qat import qat_record

    qat = qat_record(model) is not None
    if qat and options.int8_flavour is not None and options.flavours != ("tensorrt",):
        raise ExportError(f"{options.weights}: a QAT checkpoint, fine-tuned for the tensorrt flavour; its INT8 "
                          f"ONNX is that flavour only (leave out --int8-flavour {options.int8_flavour})")
    return qat


def _float_network(model):
    """A QAT model runs as its float network for the FP32 export (its fine-tuned weights)."""
    import contextlib

    from ssd_edge.training.qat import fake_quant_disabled, qat_record

    return fake_quant_disabled(model) if qat_record(model) is not None else contextlib.nullcontext()


def _export_qat(options: ExportOptions, model, source: _Source, path: Path, images: _ParityImages,
                result: ExportResult, echo: Echo) -> _Source:
    """The QDQ ONNX of the QAT `model` (export/qat.py), compared with it and with the FP32
    ONNX of its weights (reported, not enforced: int8 rounding differs)."""
    from ssd_edge.export.parity import compare_onnx
    from ssd_edge.export.qat import export_qat_int8
    from ssd_edge.export.to_onnx import DEFAULT_OPSET

    echo("exporting the QAT model's INT8 QDQ ONNX (tensorrt flavour, its own ranges: no calibration)")
    export_qat_int8(model, path, batch=1 if options.dynamic else options.batch or 1, dynamic=options.dynamic,
                    opset=options.opset or DEFAULT_OPSET, simplified=options.simplify)
    _written(path, result, echo)
    echo(f"INT8 vs the PyTorch QAT model (onnxruntime CPU): {_parity(options, model, path, images).summary()}")
    batch = source.batch or PARITY_IMAGES
    result.int8_vs_fp32 = compare_onnx(source.spec, path, source.path, images.take(max(PARITY_IMAGES, batch)), batch)
    echo(f"INT8 vs FP32 (onnxruntime CPU): {result.int8_vs_fp32.summary()}")
    return _Source(path, source.spec, source.batch, quantized=True)


def _parity_images(options: ExportOptions, count: int) -> list:
    from ssd_edge.data.synth import sample_images
    from ssd_edge.runtime.image_io import list_images, read_image

    if options.calib_data is None:
        return sample_images(count)
    return [read_image(p) for p in list_images(options.calib_data, count, recursive=True)]


def _parity(options: ExportOptions, model, path: Path, images: _ParityImages) -> ParityReport:
    from ssd_edge.export.parity import check_parity

    batch = PARITY_IMAGES if options.dynamic else options.batch or 1
    return check_parity(model, path, images.take(max(PARITY_IMAGES, batch)), batch, rtol=None)


def _quantize(options: ExportOptions, source: _Source, calibration: list[Path], path: Path, images: _ParityImages,
              result: ExportResult, echo: Echo, flavour: str, labelled=None) -> _Source:
    """The INT8 QDQ copy of `source` in `flavour`, compared with it; it keeps the source's
    input shape, so its batch is the source's. With `labelled` images (LabelledImages: the
    selection split) the method and float layers are chosen by measured mAP
    (export/int8_search.py)."""
    from ssd_edge.export.parity import compare_onnx
    from ssd_edge.export.quantize import quantize_int8

    echo(f"quantizing to INT8 ({flavour} flavour), calibrating on {len(calibration)} images from {options.calib_data}")
    if labelled is not None:
        from ssd_edge.export.int8_search import SearchConfig, choose_int8

        config = SearchConfig(methods=tuple(options.calib_methods or SearchConfig.methods), budget=options.int8_budget)
        choice = choose_int8(source.path, path, flavour, calibration, labelled, config, echo, options.progress)
        result.int8_choices.append(choice)
        floats = ", ".join(choice.float_layers) or "none"
        echo(f"INT8 {flavour}: {choice.method} calibration, layers kept float: {floats}"
             f"; {'within' if choice.within_budget else 'OVER'} the {options.int8_budget:g} budget on {labelled.name} "
             f"(drop {choice.drop:.4f})")
    else:
        method = (options.calib_methods or ("minmax",))[0]
        quantize_int8(source.path, path, calibration, flavour, progress=options.progress, method_name=method)
    _written(path, result, echo)
    batch = source.batch or PARITY_IMAGES
    result.int8_vs_fp32 = compare_onnx(source.spec, path, source.path, images.take(max(PARITY_IMAGES, batch)), batch)
    echo(f"INT8 vs FP32 (onnxruntime CPU): {result.int8_vs_fp32.summary()}")
    return _Source(path, source.spec, source.batch, quantized=True)


def _labelled(options: ExportOptions, calibrated: int, echo: Echo):
    """The selection split (LabelledImages) when --calib-data is a labelled dataset: the
    train split's images after the `calibrated` ones used for calibration; None (methods
    not compared, no accuracy table) for a folder of images without annotations."""
    from ssd_edge.data.sources import DatasetError, load_splits
    from ssd_edge.evaluation.precision import LabelledImages

    try:
        splits = load_splits(options.calib_data)
    except (DatasetError, OSError, ValueError):
        echo(f"note: {options.calib_data} has no annotations: INT8 uses {(options.calib_methods or ('minmax',))[0]} "
             "calibration unmeasured, no float fallback and no accuracy table (give a dataset to measure them)")
        return None
    split = splits.get("train") or splits["val"]
    first = min(calibrated, max(len(split.records) - options.select_images, 0))
    if first < calibrated:
        echo(f"note: {split.name} has {len(split.records)} images: the selection images overlap the calibration ones")
    last = min(first + options.select_images, len(split.records)) - 1
    return LabelledImages.of(split, first, options.select_images, name=f"{split.name} images {first}-{last}")


def _accuracy_table(options: ExportOptions, source: _Source, int8_paths: list[Path], selection, result: ExportResult,
                    echo: Echo) -> None:
    """FP32, FP16/bf16 (emulated) and every INT8 file on the dataset's val split (else the
    selection images), printed and written beside the files."""
    from ssd_edge.data.sources import load_splits
    from ssd_edge.evaluation.precision import LabelledImages, precision_table

    splits = load_splits(options.calib_data)
    measured = LabelledImages.of(splits["val"], name=f"{options.calib_data} val") if "val" in splits else selection
    table = precision_table(source.path, int8_paths, measured, ("fp32", "fp16", "bf16", "int8"), echo)
    for choice in result.int8_choices:
        floats = "; ".join(f"{name} ({why})" for name, why in choice.float_layers.items()) or "none"
        candidates = ", ".join(f"{m} drop {_worst(choice.fp32, s):.4f}" for m, s in choice.scores.items())
        table.notes.append(f"INT8 {choice.flavour}: {choice.method} calibration chosen by mAP on {choice.selection} "
                           f"(candidates: {candidates}); layers kept float beyond the flavour's rule: {floats}")
    result.accuracy = table
    echo("")
    echo(table.markdown())
    for path in table.write(options.output_dir / options.name):
        _written(path, result, echo)


def _worst(fp32: dict, score: dict) -> float:
    return max(fp32["AP50"] - score["AP50"], fp32["AP"] - score["AP"])


def _build(options: ExportOptions, source: _Source, path: Path, environment, result: ExportResult, echo: Echo) -> None:
    from ssd_edge.export.engine import EngineOptions, build_engine

    precision = "int8" if options.int8 else "fp16" if options.half else "fp32"
    batch = options.batch or source.batch or DYNAMIC_ENGINE_BATCH
    echo(f"building a TensorRT {precision} engine from {source.path}")
    engine_options = EngineOptions(precision=precision, batch=batch, workspace_gib=options.workspace,
                                   dla_core=options.dla_core, progress=options.progress)
    build_engine(source.path, path, engine_options, environment=environment, proto=source.proto)
    _written(path, result, echo)
    _written(sidecar_path(path), result, echo)

"""The optimise stage: faster ONNX variants of an exported model, kept only if they pass the gate.

From `models/onnx/<name>` it makes two variants, with ONNX Runtime's own tools:

    optimised   ONNX Runtime's offline graph optimisation (optimise.graph_level), saved as a file
    int8        INT8 quantisation by the family's rule (optimise.int8):
                  dynamic  int8 weights of MatMul, Gather and LSTM; activations quantised at run time
                  static   QDQ, per-channel int8 weights, activation ranges from training samples
                  none     no INT8 variant

Families in `optimise.transformer_fusion` go through ONNX Runtime's transformer optimiser first,
and both variants start from its fused graph. Each variant is scored on the validation split
beside the FP32 file and kept only within the configured tolerance (the test split stays
evaluate's); a rejected variant is not written, and `variants.json` says why. Nothing here is
timed: timings would make the outputs differ from run to run (bench/variants.py measures speed).

    models/variants/<name>/variants.json          Variants: every decision, kept or not
    models/variants/<name>/<kind>/model.onnx      a kept variant
    models/variants/<name>/<kind>/metadata.json   its ExportMetadata (version, variant, SHA-256)
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime

from dlzoo import onnx_model, problems, repository
from dlzoo.config import Params
from dlzoo.config.experiments import OptimiseSettings
from dlzoo.data.splits import load_info, load_split
from dlzoo.evaluate import scoring
from dlzoo.records import (
    METADATA_FILE,
    MODEL_FILE,
    VARIANTS_FILE,
    DataInfo,
    ExportMetadata,
    Gate,
    VariantDecision,
    Variants,
)
from dlzoo.store import atomic_directory

DYNAMIC_OPERATORS = ("MatMul", "Gather", "LSTM")  # ONNX Runtime's dynamic quantiser has no GRU or RNN
# What a quantised graph holds that an FP32 one does not: finding none means nothing was quantised.
QUANTISED_OPERATORS = {
    "DynamicQuantizeLinear",
    "DynamicQuantizeMatMul",
    "DynamicQuantizeLSTM",
    "MatMulInteger",
    "ConvInteger",
    "QuantizeLinear",
    "DequantizeLinear",
}
GRAPH_LEVELS = {
    "basic": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
}


@dataclass(frozen=True)
class Candidate:
    kind: str  # optimised | int8
    method: str
    payload: bytes | None  # None: nothing to quantise (`missing` says why)
    operators: dict[str, int]
    missing: str = ""


@dataclass(frozen=True)
class Optimised:
    """What the stage writes: the decisions, and the files of the kept variants by kind."""

    record: Variants
    files: dict[str, tuple[bytes, ExportMetadata]]


def run(name: str, params: Params, export_dir: Path, data_dir: Path, out_dir: Path) -> Variants:
    family = params.experiment(name).family
    optimised = optimise(export_dir, data_dir, family, params.optimise)
    write(out_dir, optimised)
    return optimised.record


def optimise(export_dir: Path, data_dir: Path, family: str, settings: OptimiseSettings) -> Optimised:
    metadata = ExportMetadata.read(export_dir / METADATA_FILE)
    fp32 = (export_dir / MODEL_FILE).read_bytes()
    info = load_info(data_dir)
    fusions = None
    source = fp32
    if family in settings.transformer_fusion:
        source, fusions = transformer_fused(fp32)
    with tempfile.TemporaryDirectory(prefix="dlzoo-optimise-") as scratch:
        candidates = [
            graph_optimised(source, settings.graph_level, Path(scratch)),
            quantised(source, settings.int8[family], settings, data_dir, Path(scratch)),
        ]
    validation = load_split(data_dir, "val")
    reference = _validation_score(metadata.problem, fp32, validation, info)
    decisions, files = [], {}
    for candidate in candidates:
        decision = decide(candidate, metadata.problem, reference, validation, info, settings)
        decisions.append(decision)
        if decision.kept:
            files[candidate.kind] = (candidate.payload, variant_metadata(metadata, decision))
    record = Variants(
        experiment=metadata.name,
        family=family,
        settings=applied_settings(settings, family),
        fp32_sha256=metadata.onnx_sha256,
        onnxruntime_version=onnxruntime.__version__,
        fusions=fusions,
        variants=decisions,
    )
    return Optimised(record, files)


def applied_settings(settings: OptimiseSettings, family: str) -> dict[str, Any]:
    """Every setting the stage reads for this family, recorded with its decisions."""
    return {
        "graph_level": settings.graph_level,
        "int8": settings.int8[family],
        "transformer_fusion": family in settings.transformer_fusion,
        "max_accuracy_drop": settings.max_accuracy_drop,
        "max_loss_increase": settings.max_loss_increase,
        "calibration_samples": settings.calibration_samples,
    }


def write(out_dir: Path, optimised: Optimised) -> None:
    with atomic_directory(out_dir) as staging:
        for kind, (payload, metadata) in optimised.files.items():
            (staging / kind).mkdir()
            (staging / kind / MODEL_FILE).write_bytes(payload)
            metadata.write(staging / kind / METADATA_FILE)
        optimised.record.write(staging / VARIANTS_FILE)


# ---- the variants ----------------------------------------------------------------------------


def transformer_fused(payload: bytes) -> tuple[bytes, dict[str, int]]:
    """ONNX Runtime's transformer optimiser (BERT patterns: attention, LayerNorm, GELU...) on the
    FP32 graph; returns the fused graph and the fused operators it found."""
    import onnxruntime.transformers as tools

    # ONNX Runtime's transformer tools import their siblings as top-level modules, relying on the
    # package's __init__ having appended its directory to sys.path; a process that restored
    # sys.path since (pytest does, between tests) would fail with "No module named fusion_options".
    directory = str(Path(tools.__file__).parent)
    if directory not in sys.path:
        sys.path.append(directory)
    from onnxruntime.transformers.optimizer import optimize_model

    # bert_tf: the patterns of graphs that tf2onnx wrote; heads and width are read off the graph.
    fused = optimize_model(onnx.load_from_string(payload), model_type="bert_tf", opt_level=0)
    found = {kind: count for kind, count in fused.get_fused_operator_statistics().items() if count}
    return fused.model.SerializeToString(), dict(sorted(found.items()))


def graph_optimised(payload: bytes, level: str, scratch: Path) -> Candidate:
    path = scratch / "optimised.onnx"
    options = onnx_model.session_options()
    options.graph_optimization_level = GRAPH_LEVELS[level]
    options.optimized_model_filepath = str(path)
    onnxruntime.InferenceSession(payload, options, providers=["CPUExecutionProvider"])
    optimised = path.read_bytes()
    method = f"ONNX Runtime {onnxruntime.__version__} offline graph optimisation, level {level}"
    return Candidate("optimised", method, optimised, new_operators(payload, optimised))


def quantised(
    payload: bytes, rule: str, settings: OptimiseSettings, data_dir: Path, scratch: Path
) -> Candidate:
    """The INT8 variant by the family's rule; no payload where the graph has nothing to quantise."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if rule == "none":
        return Candidate(
            "int8", "none", None, {}, "no INT8 variant: this family's optimise.int8 rule is none"
        )
    source, prepared = scratch / "fp32.onnx", scratch / "prepared.onnx"
    source.write_bytes(payload)
    # ONNX Runtime's own pre-processing: ONNX shape inference and basic fusions (Conv+BatchNorm).
    # Its symbolic shape inference gives up on the Transformer's graph, and nothing here needs it.
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    if rule == "static":
        samples = calibration_samples(data_dir, settings.calibration_samples)
        return _checked(static_int8(prepared, samples, _input_dtype(payload)), payload, rule)
    candidate = _checked(dynamic_int8(prepared, DYNAMIC_OPERATORS), payload, rule)
    if candidate.payload is None and candidate.missing.startswith("ONNX Runtime"):
        # ONNX Runtime 1.32 aborts on the recurrent models' dequantised embeddings: keep them FP32.
        operators = tuple(op for op in DYNAMIC_OPERATORS if op != "Gather")
        fallback = _checked(dynamic_int8(prepared, operators), payload, rule)
        method = f"{fallback.method} (Gather left in FP32: with it, {candidate.missing})"
        candidate = dataclasses.replace(fallback, method=method)
    return candidate


def dynamic_int8(prepared: Path, operators: tuple[str, ...]) -> Candidate:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = prepared.with_name("int8.onnx")
    quantize_dynamic(prepared, target, op_types_to_quantize=list(operators), weight_type=QuantType.QInt8)
    method = f"dynamic INT8: int8 weights of {', '.join(operators)}, activations quantised at run time"
    return Candidate("int8", method, target.read_bytes(), {})


def static_int8(prepared: Path, samples: np.ndarray, dtype: type) -> Candidate:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    target = prepared.with_name("int8.onnx")
    quantize_static(
        prepared,
        target,
        CalibrationReader(samples, dtype),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        # uint8 activations, int8 weights (U8S8): on this x86 CPU the full-profile CNN ran a
        # batch of 32 in 1.08 ms against 1.73 ms with int8 activations, at the same accuracy.
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    method = (
        f"static INT8 (QDQ): per-channel int8 weights, uint8 activations with ranges from "
        f"{len(samples)} training samples (min-max)"
    )
    return Candidate("int8", method, target.read_bytes(), {})


def _checked(candidate: Candidate, fp32: bytes, rule: str) -> Candidate:
    """The candidate if it quantised something and ONNX Runtime loads it, else why not."""
    operators = new_operators(fp32, candidate.payload)
    if not QUANTISED_OPERATORS & set(operators):
        found = (
            f"no {', '.join(DYNAMIC_OPERATORS)} weight" if rule == "dynamic" else "no operator it quantises"
        )
        return Candidate(
            "int8", candidate.method, None, operators, f"nothing to quantise: the graph has {found}"
        )
    failure = load_failure(candidate.payload)
    if failure:
        return Candidate("int8", candidate.method, None, operators, failure)
    return Candidate("int8", candidate.method, candidate.payload, operators)


def load_failure(payload: bytes) -> str | None:
    """Why ONNX Runtime cannot load a graph as the servers do (every optimisation on), or None.

    In a child process: ONNX Runtime 1.32 aborts the whole process on some quantised graphs
    (QDQPropagationTransformer on the recurrent models' dequantised embeddings)."""
    with tempfile.NamedTemporaryFile(suffix=".onnx") as stream:
        stream.write(payload)
        stream.flush()
        loaded = subprocess.run(
            [sys.executable, "-c", _LOAD_SCRIPT, stream.name], capture_output=True, text=True, check=False
        )
    if loaded.returncode == 0:
        return None
    last_line = (loaded.stderr.strip().splitlines() or ["no message"])[-1]
    status = f"exit status {loaded.returncode}: {last_line[-200:]}"
    return f"ONNX Runtime {onnxruntime.__version__} cannot load it ({status})"


_LOAD_SCRIPT = """
import sys, onnxruntime
options = onnxruntime.SessionOptions()
options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
onnxruntime.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
"""


def calibration_samples(data_dir: Path, count: int) -> np.ndarray:
    """Evenly spaced training samples: the same ones every run, every class of an ordered split."""
    x = load_split(data_dir, "train")[0]
    indices = np.linspace(0, len(x) - 1, num=min(count, len(x))).round().astype(int)
    return x[np.unique(indices)]


class CalibrationReader:
    """ONNX Runtime's CalibrationDataReader protocol: one input feed per call, then None."""

    def __init__(self, samples: np.ndarray, dtype: type, batch: int = 32) -> None:
        self.feeds = iter(
            [
                {onnx_model.INPUT_NAME: samples[i : i + batch].astype(dtype)}
                for i in range(0, len(samples), batch)
            ]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)

    def rewind(self) -> None:  # pragma: no cover - ONNX Runtime calls it only for some methods
        raise NotImplementedError


def _input_dtype(payload: bytes) -> type:
    elem_type = onnx.load_from_string(payload).graph.input[0].type.tensor_type.elem_type
    return np.int32 if elem_type == onnx.TensorProto.INT32 else np.float32


def new_operators(before: bytes, after: bytes) -> dict[str, int]:
    """The operators of `after` that `before` does not have, counted: what a rewrite introduced."""
    old = {node.op_type for node in onnx.load_from_string(before).graph.node}
    counts = collections.Counter(node.op_type for node in _all_nodes(onnx.load_from_string(after).graph))
    return dict(sorted((kind, count) for kind, count in counts.items() if kind not in old))


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for subgraph in (*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs):
                yield from _all_nodes(subgraph)


# ---- the gate --------------------------------------------------------------------------------


def _validation_score(
    problem: str, payload: bytes, validation: tuple[np.ndarray, np.ndarray], info: DataInfo
) -> float:
    x, y = validation
    outputs = onnx_model.predict(onnx_model.session(payload), x)
    return scoring.headline_value(problem, outputs, x, y, getattr(info.input, "scale", None))


def gate(problem: str, fp32: float, value: float, samples: int, settings: OptimiseSettings) -> Gate:
    metric = scoring.HEADLINE_METRICS[problem]
    if problem in problems.CLASSIFICATION:
        tolerance = settings.max_accuracy_drop
        allowed = f"validation accuracy at most {tolerance:g} below FP32 (optimise.max_accuracy_drop)"
        passed = fp32 - value <= tolerance + 1e-9  # 1e-9: accuracies are ratios of counts
    else:
        tolerance = settings.max_loss_increase
        allowed = f"validation {metric} at most {tolerance:.2%} above FP32 (optimise.max_loss_increase)"
        passed = value <= fp32 * (1 + tolerance) + 1e-12
    return Gate(
        metric=metric,
        samples=samples,
        fp32=fp32,
        value=value,
        change=value - fp32,
        allowed=allowed,
        passed=passed,
    )


def decide(
    candidate: Candidate,
    problem: str,
    reference: float,
    validation: tuple[np.ndarray, np.ndarray],
    info: DataInfo,
    settings: OptimiseSettings,
) -> VariantDecision:
    version = repository.VERSIONS[candidate.kind]
    common = {
        "kind": candidate.kind,
        "version": version,
        "method": candidate.method,
        "operators": candidate.operators,
    }
    if candidate.payload is None:
        return VariantDecision(**common, kept=False, reason=candidate.missing, gate=None)
    value = _validation_score(problem, candidate.payload, validation, info)
    checked = gate(problem, reference, value, len(validation[1]), settings)
    change = f"{checked.metric} {checked.value:.4f} vs FP32 {checked.fp32:.4f} ({checked.change:+.4f})"
    if not checked.passed:
        return VariantDecision(
            **common, kept=False, reason=f"rejected: {change}; allowed: {checked.allowed}", gate=checked
        )
    return VariantDecision(
        **common,
        kept=True,
        reason=f"kept: {change}",
        gate=checked,
        onnx_sha256=hashlib.sha256(candidate.payload).hexdigest(),
        onnx_bytes=len(candidate.payload),
    )


def variant_metadata(metadata: ExportMetadata, decision: VariantDecision) -> ExportMetadata:
    """The served metadata of a kept variant: the export's, with its own version, file and method."""
    return metadata.model_copy(
        update={
            "version": decision.version,
            "variant": decision.kind,
            "variant_method": decision.method,
            "onnx_sha256": decision.onnx_sha256,
            "onnx_bytes": decision.onnx_bytes,
            "parity": None,
            "onnxruntime_version": onnxruntime.__version__,
        }
    )

"""`dlzoo`: one subcommand per DVC stage. Each loads params, calls the library, writes outs."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dlzoo.config import DEFAULT_PARAMS, load_params
from dlzoo.errors import DlzooError, Terminated

VERBOSE_ENV = "DLZOO_VERBOSE"  # Keras' progress output: no output depends on it, so it is no param
TRACE_ENV = "DLZOO_TRACE_DIR"  # write what each command read there (tests/e2e/test_stage_dependencies.py)

# Each command imports what it needs when it runs: `dlzoo serve` and `dlzoo train` do not pay
# for scikit-learn's data sets, pooch and requests (about 2.5 s of start-up per stage here).


def _download(args: argparse.Namespace) -> None:
    from dlzoo.data.download import download

    record = download(args.dataset, load_params(args.params).data, args.out)
    print(f"{args.dataset}: {record['description']} -> {args.out}")


def _generate(args: argparse.Namespace) -> None:
    from dlzoo.data import generated

    info = generated.write(args.dataset, load_params(args.params).data, args.out)
    _print_counts(args.dataset, info)


def _preprocess(args: argparse.Namespace) -> None:
    from dlzoo.data.preprocess import preprocess

    info = preprocess(args.dataset, load_params(args.params).data, args.raw, args.out)
    _print_counts(args.dataset, info)


def _train(args: argparse.Namespace) -> None:
    from dlzoo.train import stage

    files = stage.Files(args.data, args.out, args.history, args.pretrained)
    summary = stage.run(args.experiment, load_params(args.params), files, verbose=args.verbose)
    if summary is None:
        print(f"{args.experiment}: this worker's share is done; the chief (worker 0) wrote the outputs")
        return
    print(f"{args.experiment}: {summary.epochs} epochs, {summary.parameters:,} parameters -> {args.out}")


def _evaluate(args: argparse.Namespace) -> None:
    from dlzoo.evaluate import stage

    files = stage.Files(args.export, args.data, args.history, args.metrics, args.plots, args.variants)
    metrics = stage.run(args.experiment, files)
    print(f"{args.experiment}: test {metrics.headline.metric} {metrics.headline.value:.4f}")


def _export(args: argparse.Namespace) -> None:
    from dlzoo.export import stage

    metadata = stage.run(args.experiment, load_params(args.params), args.model, args.data, args.out)
    parity = metadata.parity
    print(
        f"{args.experiment}: {metadata.onnx_bytes:,} bytes of ONNX; parity on {parity.samples} validation "
        f"samples: max |diff| {parity.max_abs_diff:.2e} <= {parity.tolerance:g}"
    )


def _optimise(args: argparse.Namespace) -> None:
    from dlzoo.optimise import stage

    record = stage.run(args.experiment, load_params(args.params), args.export, args.data, args.out)
    for decision in record.variants:
        print(f"{args.experiment}: {decision.kind} (version {decision.version}) {decision.reason}")


def _repository(args: argparse.Namespace) -> None:
    from dlzoo import repository

    config = repository.publish(args.export, args.variants, args.out, load_params(args.params).serving)
    print(
        f"{args.experiment}: {args.out} (max batch {config.max_batch_size}, queue delay "
        f"{config.dynamic_batching.max_queue_delay_microseconds} us, queue size "
        f"{config.dynamic_batching.default_queue_policy.max_queue_size})"
    )


def _report(args: argparse.Namespace) -> None:
    from dlzoo.report import stage

    names = list(load_params(args.params).experiments)
    print(stage.run(names, args.metrics, args.repository, args.plots, args.out), end="")


def _track(args: argparse.Namespace) -> None:
    from dlzoo.track import stage

    names = list(load_params(args.params).experiments)
    for name, outcome in stage.run(names, args.metrics, args.exports, args.plots, args.variants).items():
        print(f"{name}: {outcome}")


def _ui_urls(args: argparse.Namespace) -> None:
    from dlzoo import track

    for name, url in track.ui_urls(args.url).items():
        print(f"{name}: {url}")


def _serve(args: argparse.Namespace) -> None:
    import logging

    import uvicorn

    from dlzoo.serve.app import ServeSettings, create_app
    from dlzoo.serve.sessions import Overrides, default_threads, load_repository

    cores = default_threads()
    # Concurrent runs: one per model instance at most (each batcher runs one batch at a time).
    threads = args.threads or min(cores, _instances(args.repository, args.model))
    overrides = Overrides(
        max_batch_size=args.max_batch_size,
        max_queue_delay_ms=args.max_queue_delay_ms,
        max_queue_size=args.max_queue_size,
        dynamic_batching=not args.no_dynamic_batching,
        intra_op_threads=args.intra_op_threads or max(1, cores // threads),
    )
    settings = ServeSettings(
        repository=args.repository,
        models=tuple(args.model),
        overrides=overrides,
        max_body_bytes=int(args.max_body_mib * 1024 * 1024),
        threads=threads,
        request_timeout_s=args.request_timeout_s,
        grpc_host=args.host,
        grpc_port=args.grpc_port,
    )
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    # Loaded before uvicorn starts, so a broken repository is one clear error, not a failed startup.
    models = load_repository(settings.repository, list(settings.models), overrides)
    grpc = f" and grpc://{args.host}:{args.grpc_port}" if args.grpc_port is not None else ""
    print(f"serving {', '.join(models)} on http://{args.host}:{args.port}/v2{grpc}", flush=True)
    uvicorn.run(create_app(settings, models), host=args.host, port=args.port, log_level=args.log_level)


def _instances(root: Path, names: list[str]) -> int:
    """Model instances the repository's configs ask for (a missing one is reported at load)."""
    from dlzoo import repository
    from dlzoo.serve.sessions import servable_names

    if not root.is_dir():
        return 1
    total = 0
    for name in names or servable_names(root):
        try:
            total += (
                sum(group.count or 1 for group in repository.read_config(root / name).instance_group) or 1
            )
        except DlzooError:
            total += 1
    return max(1, total)


def _print_counts(dataset: str, info: Any) -> None:
    """One line per split of a DataInfo, or the vocabulary of a CorpusInfo."""
    if hasattr(info, "vocabulary_words"):
        print(
            f"{dataset}: vocabulary of {info.vocabulary_words} words + 3 special ids; "
            f"variants {', '.join(info.variants)}"
        )
        return
    for split, summary in info.splits.items():
        counts = summary.class_counts
        detail = ", ".join(f"{name} {n}" for name, n in counts.items()) if counts else ""
        print(
            f"{dataset}/{split}: {summary.count} samples, x {summary.x_shape} "
            f"{summary.x_dtype}{'; ' + detail if detail else ''}"
        )


def _path(help_text: str) -> dict[str, Any]:
    return {"type": Path, "required": True, "help": help_text}


def _optional_path(help_text: str) -> dict[str, Any]:
    return {"type": Path, "default": None, "help": help_text}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dlzoo", description=__doc__)
    parser.add_argument(
        "--params", type=Path, default=DEFAULT_PARAMS, help="params file (default: %(default)s)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, handler, arguments) in COMMANDS.items():
        command = commands.add_parser(name, help=help_text)
        for flag, options in arguments.items():
            command.add_argument(flag, **options)
        command.set_defaults(run=handler)
    return parser


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


DATASET = {"help": "a data set of this stage (an unknown one is refused with the list of valid ones)"}
EXPERIMENT = {"help": "a key of `experiments` in params.yaml"}
BATCHING = "(default: each model's config.pbtxt, written from params.yaml's `serving`)"


SERVE_ARGUMENTS: dict[str, dict] = {
    "--repository": {"type": Path, "default": Path("models/repository"), "help": "default: %(default)s"},
    "--host": {
        "default": "127.0.0.1",
        "help": "address to bind, REST and gRPC (default: %(default)s, local only)",
    },
    "--port": {"type": int, "default": 8000, "help": "REST port (default: %(default)s)"},
    "--grpc-port": {"type": int, "help": "gRPC port (default: no gRPC server; 8001 is Triton's)"},
    "--model": {"action": "append", "default": [], "help": "serve only this model (repeatable)"},
    "--max-batch-size": {
        "type": _positive_int,
        "help": f"samples per request and per merged batch {BATCHING}",
    },
    "--max-queue-delay-ms": {
        "type": _non_negative_float,
        "help": f"how long the batcher waits for more requests to merge {BATCHING}",
    },
    "--max-queue-size": {
        "type": _positive_int,
        "help": f"requests queued or running per model; one more gets 503 at once {BATCHING}",
    },
    "--no-dynamic-batching": {"action": "store_true", "help": "run every request on its own"},
    "--request-timeout-s": {
        "type": _positive_float,
        "default": 30.0,
        "help": "longest a request may wait and run; then 504 / DEADLINE_EXCEEDED (default: %(default)s)",
    },
    "--max-body-mib": {
        "type": _positive_float,
        "default": 8.0,
        "help": "request body limit, REST and gRPC (default: %(default)s MiB)",
    },
    "--threads": {
        "type": _positive_int,
        "help": "ONNX Runtime runs at once over all models (default: the model instances, at most the cores)",
    },
    "--intra-op-threads": {
        "type": _positive_int,
        "help": "ONNX Runtime threads per run (default: cores // --threads, so runs x threads <= cores)",
    },
    "--log-level": {"default": "info", "choices": ["critical", "error", "warning", "info", "debug"]},
}

# Each subcommand: its help, its handler and its arguments (flag -> add_argument options).
COMMANDS: dict[str, tuple[str, Callable[[argparse.Namespace], None], dict[str, dict]]] = {
    "download": (
        "fetch (full) or make (demo) a data set's raw files",
        _download,
        {"dataset": DATASET, "--out": _path("raw directory to write")},
    ),
    "generate": (
        "generate a synthetic data set's splits",
        _generate,
        {"dataset": DATASET, "--out": _path("processed directory to write")},
    ),
    "preprocess": (
        "turn raw files into train/val/test splits",
        _preprocess,
        {
            "dataset": DATASET,
            "--raw": _path("raw directory from the download stage"),
            "--out": _path("processed directory to write"),
        },
    ),
    "train": (
        "train one experiment of params.yaml and log it to MLflow",
        _train,
        {
            "experiment": EXPERIMENT,
            "--data": _path("processed data directory"),
            "--out": _path("model directory to write"),
            "--history": _path("per-epoch history CSV to write"),
            "--pretrained": {"type": Path, "help": "raw directory of pretrained weights (transfer)"},
            "--verbose": {
                "type": int,
                "choices": [0, 1, 2],
                "default": int(os.environ.get(VERBOSE_ENV, "2")),
                "help": f"Keras' progress: 0 none, 1 bar, 2 a line per epoch (default: ${VERBOSE_ENV} or 2)",
            },
        },
    ),
    "evaluate": (
        "test metrics and plots of an exported experiment (ONNX Runtime)",
        _evaluate,
        {
            "experiment": EXPERIMENT,
            "--export": _path("export directory from the export stage"),
            "--variants": _optional_path("variants directory from the optimise stage (none: FP32 only)"),
            "--data": _path("processed data directory"),
            "--history": _path("history CSV from the train stage"),
            "--metrics": _path("metrics JSON to write"),
            "--plots": _path("directory of PNG plots to write"),
        },
    ),
    "export": (
        "export to ONNX, check parity, register in MLflow",
        _export,
        {
            "experiment": EXPERIMENT,
            "--model": _path("model directory from the train stage"),
            "--data": _path("processed data directory (validation samples for the parity gate)"),
            "--out": _path("export directory to write"),
        },
    ),
    "optimise": (
        "graph-optimised and INT8 ONNX variants of an export, gated on the validation split",
        _optimise,
        {
            "experiment": EXPERIMENT,
            "--export": _path("export directory from the export stage"),
            "--data": _path("processed data directory (training samples calibrate, validation gates)"),
            "--out": _path("variants directory to write"),
        },
    ),
    "repository": (
        "lay out an export and its kept variants as a model repository entry (one version each)",
        _repository,
        {
            "experiment": EXPERIMENT,
            "--export": _path("export directory from the export stage"),
            "--variants": _optional_path("variants directory from the optimise stage (none: version 1 only)"),
            "--out": _path("repository entry to write"),
        },
    ),
    "report": (
        "the summary table of every experiment",
        _report,
        {
            "--metrics": _path("directory of metrics JSON files"),
            "--repository": _path("the model repository"),
            "--plots": _path("directory of per-experiment plots"),
            "--out": _path("markdown file to write"),
        },
    ),
    "track": (
        "add each experiment's evaluation and ONNX model to its training's MLflow run",
        _track,
        {
            "--metrics": _path("directory of metrics JSON files"),
            "--exports": _path("directory of export directories"),
            "--variants": _optional_path("directory of the optimise stage's variants directories"),
            "--plots": _path("directory of per-experiment plots"),
        },
    ),
    "ui-urls": (
        "the MLflow UI's address for each experiment, opened on its training runs",
        _ui_urls,
        {"--url": {"default": "http://127.0.0.1:5000", "help": "the UI's address (default: %(default)s)"}},
    ),
    "serve": ("serve the model repository over the Open Inference Protocol", _serve, SERVE_ARGUMENTS),
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Only the main thread may set handlers (a caller may run main() in a thread).
    handles_signals = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if handles_signals else None
    try:
        args.run(args)
    except DlzooError as error:  # the project's own errors say what to fix; anything else is a bug
        print(f"dlzoo {args.command}: error: {error}", file=sys.stderr)
        return 2
    except Terminated:
        print(f"dlzoo {args.command}: stopped by SIGTERM", file=sys.stderr)
        return Terminated.exit_code
    except KeyboardInterrupt:
        print(f"dlzoo {args.command}: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    finally:
        if handles_signals:
            signal.signal(signal.SIGTERM, previous)
    if os.environ.get(TRACE_ENV):
        _write_trace(Path(os.environ[TRACE_ENV]), sys.argv[1:] if argv is None else argv)
    return 0


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def _write_trace(directory: Path, argv: list[str]) -> None:
    """What this stage read: the params keys and the dlzoo source files (what dvc.yaml must declare)."""
    import json
    import tempfile

    from dlzoo.config.base import keys_read

    source_root = Path(__file__).resolve().parents[1]  # src/
    modules = sorted(
        str(Path(module.__file__).resolve().relative_to(source_root.parent))
        for name, module in list(sys.modules.items())
        if (name == "dlzoo" or name.startswith("dlzoo.")) and getattr(module, "__file__", None)
    )
    directory.mkdir(parents=True, exist_ok=True)
    handle, _path_written = tempfile.mkstemp(dir=directory, prefix="trace-", suffix=".json")
    with os.fdopen(handle, "w") as stream:
        trace = {"argv": argv, "params": sorted(keys_read()), "modules": modules}
        json.dump(trace | {"tensorflow": "tensorflow" in sys.modules}, stream, indent=1)


if __name__ == "__main__":
    sys.exit(main())

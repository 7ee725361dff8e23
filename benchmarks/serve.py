"""``python -m benchmarks.serve``: load test of a Triton-served medclear model, perf_analyzer style.

For each concurrency level (1, 2, 4, 8 clients) every client sends one ``1 x C x S x S`` request
after the other for ``--duration`` seconds (after ``--warmup`` seconds; C from the model's
config: 2 for a noise-map model, whose map holds a synthetic level); the table gives the
throughput (images/s), the p50/p95/p99 latency of a request as the client sees it, and the
server's mean batch size (inferences / executions from its statistics). Two models are
compared: with dynamic batching, and the same model taking one request at a time
(``max_batch_size 1``, no dynamic batching); the gain is their throughput ratio.

Without ``--url`` the benchmark writes both models' repository from ``--model`` (Python
backend, CPU) and serves it with the local server (:mod:`benchmarks.triton_local`), after a
reference row of the same model run in-process, one call after the other; with
``--url`` it measures a running server's ``--model-name`` and ``--baseline-name`` (e.g. a GPU
server with repositories from ``python -m compiler triton-repo``). Only loopback or your own
servers: the request loops are bounded by ``--duration``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.markdown import md_table, write_marked_section
from benchmarks.record import file_record, header, write_json
from benchmarks.triton_local import LocalTriton, ServerError
from compiler.errors import CompilerError
from compiler.samples import random_batch
from compiler.triton_repo import RepoOptions, write_repository
from runtime.logtext import cause
from runtime.model_contract import INPUT_NAME, OUTPUT_NAME

BATCHING, SINGLE = "medclear", "medclear_b1"
LOCAL = "in-process onnxruntime"  # the reference row: the same model without a server
SECTION = "serve"


@dataclass(frozen=True)
class Level:
    """One model at one concurrency: what the clients measured."""

    model: str
    concurrency: int
    requests: int
    seconds: float
    latencies_ms: list
    inferences: int
    executions: int

    def row(self) -> dict:
        """Throughput, latency percentiles and the server's mean batch, as record data."""
        p50, p95, p99 = np.percentile(self.latencies_ms, [50, 95, 99]) if self.latencies_ms else (None,) * 3
        return {"model": self.model, "concurrency": self.concurrency, "requests": self.requests,
                "throughput": self.requests / self.seconds, "p50_ms": p50, "p95_ms": p95, "p99_ms": p99,
                "mean_batch": self.inferences / self.executions if self.executions else None}


def _client(url: str):
    import tritonclient.grpc as grpcclient

    return grpcclient.InferenceServerClient(url)


def _input_channels(client, model: str) -> int:
    """The channels of ``model``'s input, from its config (``dims: [C, -1, -1]``)."""
    config = client.get_model_config(model, as_json=True)["config"]
    dims = next(i["dims"] for i in config.get("input", []) if i.get("name") == INPUT_NAME)
    return int(dims[0])


def _statistics(client, model: str) -> tuple[int, int]:
    """The server's (inference_count, execution_count) for ``model``."""
    stats = client.get_inference_statistics(model, as_json=True).get("model_stats", [])
    return (sum(int(s.get("inference_count", 0)) for s in stats),
            sum(int(s.get("execution_count", 0)) for s in stats))


def _clients_loop(url: str, model: str, image: np.ndarray, until: float, start: float, out: list,
                  errors: list) -> None:
    """One client: synchronous requests until ``until``; latencies (ms) of those sent after
    ``start``; a failure ends it and goes to ``errors``."""
    import tritonclient.grpc as grpcclient

    client = _client(url)
    request = grpcclient.InferInput(INPUT_NAME, list(image.shape), "FP32")
    request.set_data_from_numpy(image)
    outputs = [grpcclient.InferRequestedOutput(OUTPUT_NAME)]
    try:
        while (sent := time.perf_counter()) < until:
            client.infer(model, [request], outputs=outputs)
            if sent >= start:
                out.append((time.perf_counter() - sent) * 1000.0)
    except Exception as error:  # reported by measure() in the main thread
        errors.append(error)
    finally:
        client.close()


def measure(url: str, model: str, concurrency: int, side: int, warmup_s: float, duration_s: float) -> Level:
    """``concurrency`` clients against ``model`` for ``warmup_s + duration_s`` seconds."""
    stats = _client(url)
    image = random_batch((1, _input_channels(stats, model), side, side))  # and a synthetic noise map
    start = time.perf_counter() + warmup_s
    until = start + duration_s
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors: list[Exception] = []
    threads = [threading.Thread(target=_clients_loop, args=(url, model, image, until, start, latencies[i], errors))
               for i in range(concurrency)]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, start - time.perf_counter()))
    before = _statistics(stats, model)
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    after = _statistics(stats, model)
    stats.close()
    flat = [ms for client in latencies for ms in client]
    return Level(model, concurrency, len(flat), duration_s, flat, after[0] - before[0], after[1] - before[1])


def measure_local(model: Path, side: int, warmup_s: float, duration_s: float) -> Level:
    """The same model in this process (the runtime's ONNX Runtime backend), one call after the
    other: what the server's numbers compare with on this machine, at this moment."""
    from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

    latencies = []
    with OnnxRuntimeBackend(model, providers=["CPUExecutionProvider"]) as backend:
        image = random_batch((1, backend.contract.input_channels, side, side))
        start = time.perf_counter() + warmup_s
        until = start + duration_s
        while (sent := time.perf_counter()) < until:
            backend.infer(image)
            if sent >= start:
                latencies.append((time.perf_counter() - sent) * 1000.0)
    return Level(LOCAL, 1, len(latencies), duration_s, latencies, len(latencies), len(latencies))


def local_repository(model: Path, folder: Path, queue_delay_us: int, instances: int) -> Path:
    """The two models to compare, on the Python backend (CPU)."""
    common = {"platform": "python", "instances": instances}
    write_repository([model], folder, RepoOptions(name=BATCHING, queue_delay_us=queue_delay_us, **common))
    write_repository([model], folder, RepoOptions(name=SINGLE, max_batch=1, dynamic_batching=False, **common))
    return folder


def sweep(url: str, models: list[str], levels: list[int], args: argparse.Namespace) -> list[dict]:
    """Every model at every concurrency level, printed as it goes."""
    rows = []
    for model in models:
        for concurrency in levels:
            row = measure(url, model, concurrency, args.size, args.warmup, args.duration).row()
            rows.append(row)
            print(f"serve: {model} x{concurrency}: {row['throughput']:.1f} img/s, p50 {row['p50_ms']:.1f} ms, "
                  f"p99 {row['p99_ms']:.1f} ms, mean batch {row['mean_batch'] or 0:.2f}", file=sys.stderr)
    return rows


def gains(rows: list[dict], batching: str, single: str) -> list[dict]:
    """Throughput with dynamic batching over one request at a time, per concurrency."""
    by = {(r["model"], r["concurrency"]): r for r in rows}
    return [{"concurrency": c, "gain": by[(batching, c)]["throughput"] / by[(single, c)]["throughput"]}
            for (m, c) in by if m == batching and (single, c) in by and by[(single, c)]["throughput"]]


def markdown(record: dict) -> str:
    """The record's table, machine line and gains."""
    machine, settings = record["machine"], record["settings"]
    where = machine["gpu"] or f"{machine['cpu']}, {machine['usable_cores']} cores"
    lines = [f"Machine: {where}; Triton {settings['server']}; {settings['size']}x{settings['size']} float32 "
             f"requests, {settings['duration_s']:g} s per level after {settings['warmup_s']:g} s warmup; "
             f"{record['created_utc']}.", ""]
    table = [[r["model"], r["concurrency"], r["throughput"], r["p50_ms"], r["p95_ms"], r["p99_ms"], r["mean_batch"]]
             for r in record["rows"]]
    lines.append(md_table(["model", "clients", "images/s", "p50 ms", "p95 ms", "p99 ms", "server batch"], table))
    if record["gains"]:
        lines += ["", "Dynamic batching over one request at a time: " + ", ".join(
            f"{g['gain']:.2f}x at {g['concurrency']} clients" for g in record["gains"]) + "."]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/medclear_student.fp32.onnx"),
                        help="ONNX model served locally (without --url)")
    parser.add_argument("--url", help="a running server's gRPC HOST:PORT (default: start a local one)")
    parser.add_argument("--model-name", default=BATCHING, help=f"model with dynamic batching (default {BATCHING})")
    parser.add_argument("--baseline-name", default=SINGLE,
                        help=f"the same model without batching (default {SINGLE}; '' to skip)")
    parser.add_argument("--concurrency", default="1,2,4,8", help="client counts (default 1,2,4,8)")
    parser.add_argument("--size", type=int, default=512, help="image side (default 512)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per level (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring (default 2)")
    parser.add_argument("--queue-delay-us", type=int, default=2000, help="local server's batching delay")
    parser.add_argument("--instances", type=int, default=1, help="local server's model instances")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/serve.json"), help="JSON record")
    parser.add_argument("--into", type=Path, metavar="DOC.md", help="write the table between <!-- serve:begin/end -->")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, levels: list[int]) -> dict:
    """The sweep against ``--url``, or against a local server on a temporary repository."""
    models = [args.model_name] + ([args.baseline_name] if args.baseline_name else [])
    settings = {"size": args.size, "duration_s": args.duration, "warmup_s": args.warmup, "concurrency": levels,
                "models": models, "server": args.url or "2.51 (nvidia-pytriton 0.7.0), Python backend, CPU"}
    if args.url:
        return {**header("serve", settings), "rows": sweep(args.url, models, levels, args)}
    settings.update({"queue_delay_us": args.queue_delay_us, "instances": args.instances})
    with tempfile.TemporaryDirectory() as folder, LocalTriton(
            local_repository(args.model, Path(folder), args.queue_delay_us, args.instances)) as server:
        rows = [measure_local(args.model, args.size, args.warmup, args.duration).row()]
        return {**header("serve", settings), "model": file_record(args.model),
                "rows": rows + sweep(server.grpc_url, models, levels, args)}


def main(argv: list[str] | None = None) -> int:
    """Run the sweep; print the table; write the record (and the doc section with --into)."""
    args = parse_args(argv)
    try:
        levels = [int(c) for c in args.concurrency.split(",")]
        record = run(args, levels)
    except (ValueError, ServerError, CompilerError) as error:
        print(f"serve: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # tritonclient's InferenceServerException, transport errors
        print(f"serve: error: the server failed: {cause(error)}", file=sys.stderr)
        return 2
    record["gains"] = gains(record["rows"], args.model_name, args.baseline_name) if args.baseline_name else []
    write_json(record, args.out)
    text = markdown(record)
    print(text)
    if args.into is not None:
        write_marked_section(args.into, text, SECTION)
    return 0


if __name__ == "__main__":
    sys.exit(main())

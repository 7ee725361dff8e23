"""Triton Inference Server client backend: the model runs on a server, this side prepares and restores.

The server's model repository comes from ``python -m compiler triton-repo``: its config's
``parameters`` carry the model's contract, which this backend reads back from the server, so
the images are normalized exactly as for a local model. ``infer(batch)`` sends every frame or
tile of the batch as its own request and keeps up to ``in_flight`` of them outstanding, so the
server's dynamic batcher can put them (and other clients' requests) into one execution.

tritonclient is an optional extra (``pip install 'medclear[triton]'``), imported when a backend
opens; gRPC by default, HTTP with ``protocol="http"``. No torch, no GPU on this side.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.backends.base import Backend, BackendError, InputConstraints
from runtime.logtext import cause
from runtime.model_contract import INPUT_NAME, OUTPUT_NAME, ModelContract, ModelContractError

PROTOCOLS = ("grpc", "http")
DEFAULT_MODEL_NAME = "medclear"
DEFAULT_IN_FLIGHT = 4
DEFAULT_TIMEOUT_S = 60.0
UNBOUNDED = 1 << 30
INSTALL_HINT = "install the client with `pip install 'medclear[triton]'` (tritonclient)"
# grpc://HOST:PORT/NAME, also as pathlib writes it (grpc:/HOST:PORT/NAME) when it came in as a Path.
_MODEL_URL = re.compile(r"(?P<protocol>grpc|http)://?(?P<url>[^/\s]+:\d+)/(?P<name>[A-Za-z0-9_.-]+)")
_HOST_PORT = re.compile(r"[^/\s:]+:\d+|\[[0-9A-Fa-f:]+\]:\d+")


@dataclass(frozen=True)
class TritonTarget:
    """Which server and model: ``url`` is HOST:PORT (gRPC 8001 or HTTP 8000 by Triton's defaults)."""

    url: str
    model_name: str = DEFAULT_MODEL_NAME
    protocol: str = "grpc"
    model_version: str = ""  # "" = the version the server's policy serves (the latest)
    in_flight: int = DEFAULT_IN_FLIGHT
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise BackendError(f"Triton protocol {self.protocol!r}: use one of {', '.join(PROTOCOLS)}")
        if not _HOST_PORT.fullmatch(str(self.url)):
            raise BackendError(f"Triton address {cause(repr(self.url), 80)} is not HOST:PORT")
        if self.in_flight < 1 or self.timeout_s <= 0:
            raise BackendError("Triton: in-flight requests must be >= 1 and the timeout > 0")

    @classmethod
    def from_model_url(cls, text: str | Path, **options: Any) -> "TritonTarget | None":
        """``grpc://HOST:PORT/NAME`` or ``http://HOST:PORT/NAME`` as a target; None for anything else."""
        match = _MODEL_URL.fullmatch(str(text))
        if match is None:
            return None
        return cls(match["url"], match["name"], match["protocol"], **options)

    def describe(self) -> str:
        """``grpc://HOST:PORT/NAME``."""
        return f"{self.protocol}://{self.url}/{self.model_name}"


def _client_module(protocol: str):
    """tritonclient.grpc or tritonclient.http; BackendError with the install hint if absent."""
    try:
        if protocol == "http":
            import tritonclient.http as module
        else:
            import tritonclient.grpc as module
    except ImportError as error:
        raise BackendError(f"the Triton backend needs tritonclient ({cause(error)}); {INSTALL_HINT}") from None
    return module


def _shape_parameter(parameters: dict[str, str], key: str, source: str) -> tuple[int, ...] | None:
    """A ``[N, C, H, W]`` JSON parameter, or None if absent."""
    if key not in parameters:
        return None
    try:
        shape = tuple(int(v) for v in json.loads(parameters[key]))
    except (TypeError, ValueError):
        raise BackendError(f"{source}: parameter {key} is not a JSON list of integers") from None
    if len(shape) != 4:
        raise BackendError(f"{source}: parameter {key} must be [N, C, H, W], is {list(shape)}")
    return shape


class TritonBackend(Backend):
    """Runs the model on a Triton server; the contract and input limits come from its config."""

    kind = "triton"

    def __init__(self, target: TritonTarget) -> None:
        super().__init__(Path(target.model_name))
        self.target = target
        self._client = None
        self._module = None
        self._version = ""
        self._model_id = ""

    @property
    def source(self) -> str:
        return self.target.describe()

    @property
    def preferred_batch(self) -> int:
        """One request per frame or tile, ``in_flight`` of them at a time."""
        return self.target.in_flight

    def describe(self) -> str:
        version = f" version {self._version}" if self._version else ""
        return f"triton ({self.target.describe()}{version})"

    def model_id(self) -> str:
        """The sha256 of the ONNX the repository was written from (its config says), else the address."""
        return self._model_id or self.target.describe()

    def _check_source(self) -> None:
        """Nothing local to check: the server is asked in ``_open``."""

    def _open(self) -> None:
        target = self.target
        self._module = _client_module(target.protocol)
        where = f"Triton at {target.url} ({target.protocol})"
        try:
            if target.protocol == "http":
                self._client = self._module.InferenceServerClient(
                    target.url, concurrency=target.in_flight, connection_timeout=target.timeout_s,
                    network_timeout=target.timeout_s)
                ready = self._client.is_server_ready()
            else:
                self._client = self._module.InferenceServerClient(target.url)
                ready = self._client.is_server_ready(client_timeout=target.timeout_s)
        except Exception as error:  # tritonclient raises its own and the transports' exceptions
            raise BackendError(f"cannot reach {where}: {cause(error)}; is the server running?") from None
        if not ready:
            raise BackendError(f"{where} is not ready (still loading models, or shutting down)")
        config = self._model_config(where)
        parameters = {k: str(v.get("string_value", "")) for k, v in (config.get("parameters") or {}).items()}
        source = f"model {target.model_name!r} on {where}"
        try:
            self._contract = ModelContract.from_metadata(parameters, source=source)
        except ModelContractError as error:
            raise BackendError(f"{error} (write the repository with `python -m compiler triton-repo`)") from None
        names = ({i.get("name") for i in config.get("input", [])}, {o.get("name") for o in config.get("output", [])})
        if INPUT_NAME not in names[0] or OUTPUT_NAME not in names[1]:
            raise BackendError(f"{source}: needs input {INPUT_NAME!r} and output {OUTPUT_NAME!r}")
        if int(config.get("max_batch_size", 0)) < 1:
            raise BackendError(f"{source}: max_batch_size must be >= 1 (requests carry a batch dimension)")
        low = _shape_parameter(parameters, "medclear.min_shape", source) or (1, 1, 1, 1)
        high = _shape_parameter(parameters, "medclear.max_shape", source) or (UNBOUNDED, 1, UNBOUNDED, UNBOUNDED)
        # The batch is split into single-frame requests here, so only H and W are bounded.
        channels = self._contract.input_channels
        self._constraints = InputConstraints(INPUT_NAME, self._contract.size_multiple, (1, channels, *low[2:]),
                                             (UNBOUNDED, channels, *high[2:]), channels)
        self._model_id = parameters.get("medclear.source_sha256", "")

    def _model_config(self, where: str) -> dict:
        """The model's config as JSON data; BackendError if the model is not ready."""
        target = self.target
        try:
            if not self._client.is_model_ready(target.model_name, target.model_version):
                as_json = {} if target.protocol == "http" else {"as_json": True}  # HTTP answers JSON anyway
                index = self._client.get_model_repository_index(**as_json)
                models = index if isinstance(index, list) else index.get("models", [])
                ready = sorted(m.get("name", "?") for m in models if m.get("state") == "READY")
                raise BackendError(f"model {target.model_name!r} is not ready on {where}; ready models: "
                                   f"{', '.join(ready) or 'none'} (--model-name NAME)")
            if target.protocol == "http":
                config = self._client.get_model_config(target.model_name, target.model_version)
                metadata = self._client.get_model_metadata(target.model_name, target.model_version)
            else:
                config = self._client.get_model_config(target.model_name, target.model_version, as_json=True)["config"]
                metadata = self._client.get_model_metadata(target.model_name, target.model_version, as_json=True)
        except BackendError:
            raise
        except Exception as error:
            raise BackendError(f"cannot read model {target.model_name!r} from {where}: {cause(error)}") from None
        self._version = ",".join(metadata.get("versions", []))
        return config

    def _submit(self, frame: np.ndarray) -> Future:
        """Send one request; a future of its output."""
        module, target = self._module, self.target
        request = module.InferInput(INPUT_NAME, list(frame.shape), "FP32")
        request.set_data_from_numpy(frame)
        outputs = [module.InferRequestedOutput(OUTPUT_NAME)]
        future: Future = Future()
        if target.protocol == "http":
            handle = self._client.async_infer(target.model_name, [request], model_version=target.model_version,
                                              outputs=outputs)
            future.set_result(handle)  # resolved in _result: the HTTP client has no callbacks
            return future

        def done(result, error) -> None:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

        self._client.async_infer(target.model_name, [request], done, model_version=target.model_version,
                                 outputs=outputs, client_timeout=target.timeout_s)
        return future

    def _result(self, future: Future) -> np.ndarray:
        """A submitted request's output array; BackendError (one line) if the server failed it."""
        try:
            result = future.result(timeout=self.target.timeout_s)
            if self.target.protocol == "http":
                result = result.get_result(timeout=self.target.timeout_s)
            return np.asarray(result.as_numpy(OUTPUT_NAME), dtype=np.float32)
        except Exception as error:
            raise BackendError(f"Triton request failed ({self.target.describe()}): {cause(error)}") from None

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        frames = [batch[i : i + 1] for i in range(len(batch))]
        pending: dict[int, Future] = {}
        outputs: list[np.ndarray] = [None] * len(frames)  # type: ignore[list-item]
        submitted = 0
        while submitted < len(frames) or pending:
            while submitted < len(frames) and len(pending) < self.target.in_flight:
                pending[submitted] = self._submit(frames[submitted])
                submitted += 1
            oldest = min(pending)
            outputs[oldest] = self._result(pending.pop(oldest))
        return np.concatenate(outputs)

    def _close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # closing a client whose server is gone may raise; nothing is left to free
                pass
        self._client = None

"""The Triton client backend against a real server: nvidia-pytriton's tritonserver (Triton 2.51, CPU,
Python backend) on loopback ports, serving a repository written by ``compiler triton-repo``.

The server is test data fetched by ``python -m benchmarks.triton_local fetch`` (.ci/run does):
without it these tests fail in CI and skip elsewhere, naming that command.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from runtime_fixtures import make_smoothing_model, pydicom_file, run_cli
from triton_fixtures import require_server

from benchmarks.triton_local import LocalTriton, shm_regions
from compiler.pbtxt import render
from compiler.triton_repo import RepoOptions, write_repository
from runtime.backends import BackendError, select_backend
from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from runtime.backends.triton_backend import TritonBackend, TritonTarget
from runtime.enhance import main as enhance_main
from runtime.engine_sidecar import sha256_file
from runtime.image_contract import modality_image
from runtime.model_contract import NOISE_MAP, ModelContract
from runtime.pipeline import enhance_values

import tritonclient.grpc  # noqa: F401  (medclear[triton], part of the test extra)
QUEUE_DELAY_US = 20_000  # long enough that requests sent together are batched together


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> Path:
    return make_smoothing_model(tmp_path_factory.mktemp("model") / "smooth.onnx")


@pytest.fixture(scope="module")
def map_model(tmp_path_factory) -> Path:
    """The fixture model as a noise-map model (two input channels)."""
    contract = ModelContract(modalities=("*",), model_name="map", noise_conditioning=NOISE_MAP)
    return make_smoothing_model(tmp_path_factory.mktemp("map") / "map.onnx", contract=contract)


@pytest.fixture(scope="module")
def repository(onnx_model, map_model, tmp_path_factory) -> Path:
    """``medclear`` (the fixture model on the Python backend), ``map`` (a noise-map model, warmed
    up with two channels) and ``bare`` (no contract in its config)."""
    repo = tmp_path_factory.mktemp("repo")
    options = RepoOptions(platform="python", queue_delay_us=QUEUE_DELAY_US, warmup_side=64)
    write_repository([onnx_model], repo, options)
    write_repository([map_model], repo, RepoOptions(name="map", platform="python", warmup_side=64))
    bare = write_repository([onnx_model], repo, RepoOptions(name="bare", platform="python", warmup_side=0))
    (bare.model_dir / "config.pbtxt").write_text(render({k: v for k, v in bare.config.items() if k != "parameters"}))
    return repo


@pytest.fixture(scope="module")
def server(repository):
    require_server()
    with LocalTriton(repository) as running:
        yield running


@pytest.fixture(scope="module")
def local_outputs(onnx_model, tmp_path_factory) -> Path:
    """The CLI's --format npy outputs with the model run locally on ONNX Runtime."""
    out = tmp_path_factory.mktemp("local")
    result = run_cli(*INPUTS(), "-o", str(out), "--format", "npy", "--model", str(onnx_model), "-q")
    assert result.returncode == 0, result.stderr
    return out


def INPUTS() -> list[str]:
    return [str(pydicom_file("CT_small.dcm")), str(pydicom_file("MR_small.dcm"))]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_cli_through_triton_equals_local_inference(server, local_outputs, tmp_path, protocol):
    url = server.grpc_url if protocol == "grpc" else server.http_url
    result = run_cli(*INPUTS(), "-o", str(tmp_path), "--format", "npy", "--backend", "triton", "--url", url,
                     "--protocol", protocol, "-q")
    assert result.returncode == 0, result.stderr
    assert f"triton ({protocol}://{url}/medclear version 1)" in result.stdout
    for name in ("CT_small", "MR_small"):
        remote = np.load(tmp_path / f"{name}.enhanced.npy")
        np.testing.assert_array_equal(remote, np.load(local_outputs / f"{name}.enhanced.npy"))


def test_backend_reads_the_contract_from_the_server_and_keeps_requests_in_flight(server, onnx_model):
    import tritonclient.grpc as grpcclient

    stats = grpcclient.InferenceServerClient(server.grpc_url)

    def counts() -> tuple[int, int]:
        (model,) = stats.get_inference_statistics("medclear", "1", as_json=True)["model_stats"]
        return int(model.get("inference_count", 0)), int(model.get("execution_count", 0))

    batch = np.random.default_rng(0).random((8, 1, 64, 48), dtype=np.float32)
    before = counts()
    with TritonBackend(TritonTarget(server.grpc_url, in_flight=4)) as remote, OnnxRuntimeBackend(onnx_model) as local:
        assert remote.contract == local.contract and remote.constraints.size_multiple == 8
        assert remote.model_id() == sha256_file(onnx_model) and remote.preferred_batch == 4
        np.testing.assert_array_equal(remote.infer(batch), local.infer(batch))
    inferences, executions = (after - start for after, start in zip(counts(), before))
    assert inferences == 8 and executions < 8  # the dynamic batcher joined requests in flight together
    stats.close()


def test_a_noise_map_model_through_triton_equals_local_inference(server, map_model):
    values, _, padding = modality_image(pydicom.dcmread(pydicom_file("CT_small.dcm")))
    with TritonBackend(TritonTarget(server.grpc_url, "map")) as remote, OnnxRuntimeBackend(map_model) as local:
        assert remote.contract.input_channels == 2 and remote.constraints.channels == 2
        np.testing.assert_array_equal(enhance_values(remote, values, "CT", padding=padding),
                                      enhance_values(local, values, "CT", padding=padding))


def test_model_without_a_contract_or_unknown_is_refused_in_one_line(server, tmp_path, capsys):
    with pytest.raises(BackendError, match=r"metadata key 'medclear.format_version' missing.*triton-repo"):
        TritonBackend(TritonTarget(server.grpc_url, model_name="bare")).open()
    assert enhance_main([INPUTS()[0], "-o", str(tmp_path), "--url", server.grpc_url, "--model-name", "absent"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (f"medclear: error: model 'absent' is not ready on Triton at {server.grpc_url} (grpc); "
                     "ready models: bare, map, medclear (--model-name NAME)")


def test_killed_server_is_a_clear_error_and_leaves_no_shared_memory(repository, tmp_path):
    require_server()
    with LocalTriton(repository) as doomed:
        regions = shm_regions(doomed.process.pid)
        with TritonBackend(TritonTarget(doomed.http_url, protocol="http")) as backend:
            assert backend.infer(np.zeros((1, 1, 16, 16), np.float32)).shape == (1, 1, 16, 16)
        doomed.stop(kill=True)
        assert regions and not any(Path(region).exists() for region in regions)
        result = run_cli(INPUTS()[0], "-o", str(tmp_path), "--url", doomed.grpc_url, "-q")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"medclear: error: cannot reach Triton at {doomed.grpc_url} (grpc): ")
    assert result.stderr.strip().endswith("is the server running?")


@pytest.mark.parametrize("arguments, message", [
    (["--backend", "triton"], "--backend triton needs --url HOST:PORT"),
    (["--url", "127.0.0.1:1", "--backend", "onnxruntime"], "--url is for the Triton backend"),
    (["--url", "no-port"], "Triton address 'no-port' is not HOST:PORT"),
    (["--url", "127.0.0.1:1", "--in-flight", "0"], "in-flight requests must be >= 1"),
])
def test_triton_arguments_are_checked_before_anything_runs(arguments, message, tmp_path, capsys):
    assert enhance_main([INPUTS()[0], "-o", str(tmp_path), *arguments]) == 2
    assert message in capsys.readouterr().err


def test_model_url_selects_the_triton_backend_also_as_a_path():
    backend = select_backend(Path("grpc://10.0.0.5:8001/ct_denoiser"))  # what a --model Path option holds
    assert isinstance(backend, TritonBackend) and backend.source == "grpc://10.0.0.5:8001/ct_denoiser"
    assert select_backend("http://triton:8000/medclear", "triton").target.protocol == "http"
    with pytest.raises(BackendError, match="use --backend triton"):
        select_backend("grpc://triton:8001/medclear", "onnxruntime")

"""``python -m compiler triton-repo``: the repository layout, and every config.pbtxt parsed with
Triton's own protobuf definitions (tritonclient's model_config_pb2), no server needed."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from runtime_fixtures import make_smoothing_model

from compiler.__main__ import main as compiler_main
from compiler.errors import CompilerError
from compiler.pbtxt import render
from compiler.triton_repo import PYTHON_MODEL, RepoOptions, write_repository
from runtime.engine_sidecar import sha256_file, write_sidecar
from runtime.model_contract import NOISE_MAP, ModelContract

from tritonclient.grpc import model_config_pb2  # medclear[triton], part of the test extra
pb = model_config_pb2


def parse(path: Path) -> model_config_pb2.ModelConfig:
    """A config.pbtxt as Triton reads it (unknown fields or bad enums raise)."""
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def contract_of(config: model_config_pb2.ModelConfig) -> ModelContract:
    return ModelContract.from_metadata({k: v.string_value for k, v in config.parameters.items()})


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> Path:
    contract = ModelContract(size_multiple=16, model_name="test-smoothing", modalities=("CT", "MR"),
                             training_data='{"note": "quote \\" newline \\n, µ"}')
    return make_smoothing_model(tmp_path_factory.mktemp("onnx") / "smooth.onnx", contract=contract)


def fake_engine(folder: Path, capability: str, onnx: Path, low=(1, 1, 256, 256), opt=(4, 1, 512, 512),
                high=(16, 1, 1024, 1024), trt="10.3.0") -> Path:
    """Bytes that stand for an engine, with the sidecar `compiler build` writes."""
    engine = folder / f"student_sm{capability.replace('.', '')}.engine"
    engine.write_bytes(b"\x00fake plan for " + capability.encode())
    write_sidecar(engine, {
        "tensorrt_version": trt, "gpu_name": f"GPU {capability}", "compute_capability": capability,
        "precision": "fp16", "profile": {"input": "image", "min": list(low), "opt": list(opt), "max": list(high)},
        "onnx_sha256": sha256_file(onnx), "model_contract": ModelContract(size_multiple=16).to_metadata(),
    })
    return engine


def test_onnx_model_becomes_an_onnxruntime_model_with_batching_warmup_and_its_contract(onnx_model, tmp_path):
    result = write_repository([onnx_model], tmp_path / "repo", RepoOptions(trt_fp16=True, instances=2, warmup_side=500))
    config = parse(tmp_path / "repo" / "medclear" / "config.pbtxt")
    assert result.version == 1 and (tmp_path / "repo/medclear/1/model.onnx").read_bytes() == onnx_model.read_bytes()
    assert config.name == "medclear" and config.platform == "onnxruntime_onnx" and config.max_batch_size == 8
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [("image", pb.TYPE_FP32, [1, -1, -1])]
    assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [("enhanced", pb.TYPE_FP32, [1, -1, -1])]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(g.count, g.kind) for g in config.instance_group] == [(2, pb.ModelInstanceGroup.KIND_GPU)]
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP16"
    (warmup,) = config.model_warmup
    assert warmup.batch_size == 1 and list(warmup.inputs["image"].dims) == [1, 512, 512]  # 500 -> multiple of 16
    assert warmup.inputs["image"].zero_data
    assert config.version_policy.latest.num_versions == 1
    assert contract_of(config) == ModelContract.from_metadata(
        {k: v.string_value for k, v in config.parameters.items() if k.startswith("medclear.")})
    assert contract_of(config).training_data == '{"note": "quote \\" newline \\n, µ"}'
    assert config.parameters["medclear.source_sha256"].string_value == sha256_file(onnx_model)
    assert "medclear.max_shape" not in config.parameters  # an ONNX model: H and W unbounded


def test_a_noise_map_model_takes_two_input_channels_and_gives_one(tmp_path):
    contract = ModelContract(size_multiple=16, noise_conditioning=NOISE_MAP)
    write_repository([make_smoothing_model(tmp_path / "map.onnx", contract=contract)], tmp_path / "repo")
    config = parse(tmp_path / "repo" / "medclear" / "config.pbtxt")
    assert [list(t.dims) for t in config.input] == [[2, -1, -1]]
    assert [list(t.dims) for t in config.output] == [[1, -1, -1]]
    assert list(config.model_warmup[0].inputs["image"].dims) == [2, 512, 512]
    assert contract_of(config).input_channels == 2


def test_each_run_adds_the_next_version_and_an_existing_one_is_refused(onnx_model, tmp_path):
    repo = tmp_path / "repo"
    assert write_repository([onnx_model], repo).version == 1
    assert write_repository([onnx_model], repo).version == 2
    assert sorted(p.name for p in (repo / "medclear").iterdir()) == ["1", "2", "config.pbtxt"]
    with pytest.raises(CompilerError, match="must be >= 1 and not exist yet"):
        write_repository([onnx_model], repo, RepoOptions(version=2))
    with pytest.raises(CompilerError, match="serves another kind of model"):
        write_repository([onnx_model], repo, RepoOptions(platform="python"))


def test_python_platform_ships_the_runtime_model_on_cpu_instances(onnx_model, tmp_path):
    write_repository([onnx_model], tmp_path, RepoOptions(name="cpu", platform="python", dynamic_batching=False))
    config = parse(tmp_path / "cpu" / "config.pbtxt")
    assert config.backend == "python" and not config.platform and not config.HasField("dynamic_batching")
    assert [g.kind for g in config.instance_group] == [pb.ModelInstanceGroup.KIND_CPU]
    assert (tmp_path / "cpu/1/model.py").read_text() == PYTHON_MODEL.read_text()
    assert (tmp_path / "cpu/1/model.onnx").is_file()


def test_engines_become_one_tensorrt_plan_per_compute_capability_within_their_profiles(onnx_model, tmp_path):
    engines = [fake_engine(tmp_path, "8.6", onnx_model),
               fake_engine(tmp_path, "9.0", onnx_model, low=(1, 1, 128, 256), high=(8, 1, 2048, 768))]
    write_repository(engines, tmp_path / "repo")
    config = parse(tmp_path / "repo/medclear/config.pbtxt")
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 8  # the smaller profile's N
    assert dict(config.cc_model_filenames) == {"8.6": "model_sm86.plan", "9.0": "model_sm90.plan"}
    assert (tmp_path / "repo/medclear/1/model_sm90.plan").read_bytes() == engines[1].read_bytes()
    assert config.parameters["medclear.min_shape"].string_value == "[1, 1, 256, 256]"
    assert config.parameters["medclear.max_shape"].string_value == "[8, 1, 1024, 768]"
    assert config.parameters["medclear.tensorrt_version"].string_value == "10.3.0"
    assert config.parameters["medclear.source_sha256"].string_value == sha256_file(onnx_model)
    assert list(config.model_warmup[0].inputs["image"].dims) == [1, 512, 512]  # the profile's opt H, W
    assert [g.kind for g in config.instance_group] == [pb.ModelInstanceGroup.KIND_GPU]
    write_repository(engines[:1], tmp_path / "one", RepoOptions(max_batch=4))
    single = parse(tmp_path / "one/medclear/config.pbtxt")
    assert not single.cc_model_filenames and single.max_batch_size == 4
    assert (tmp_path / "one/medclear/1/model.plan").is_file()


@pytest.mark.parametrize("case, message", [
    ("same_capability", "two engines for the same compute capability"),
    ("other_onnx", "differ in source ONNX"),
    ("other_trt", "differ in TensorRT version"),
    ("changed", "changed since it was built"),
    ("batch_over_profile", "outside the engine profile's batch range 1..16"),
    ("min_batch", "minimum batch is 2"),
    ("mixed", "give one ONNX model, or one or more TensorRT engines"),
    ("python_on_gpu", "python platform runs ONNX Runtime on the CPU"),
    ("fp16_on_cpu", "--trt-fp16 is for ONNX models on GPU"),
    ("engine_on_cpu", "TensorRT engines run on GPU instances only"),
    ("missing", "model file not found"),
])
def test_bad_requests_fail_with_one_line(onnx_model, tmp_path, case, message):
    engine = fake_engine(tmp_path, "8.6", onnx_model)
    other = make_smoothing_model(tmp_path / "other.onnx", strength=0.3)
    requests = {  # built lazily: fake engines of one capability share a file name
        "same_capability": lambda: ([engine, engine], RepoOptions()),
        "other_onnx": lambda: ([engine, fake_engine(tmp_path, "9.0", other)], RepoOptions()),
        "other_trt": lambda: ([engine, fake_engine(tmp_path, "9.0", onnx_model, trt="10.4.0")], RepoOptions()),
        "changed": lambda: ([engine], RepoOptions()),
        "batch_over_profile": lambda: ([engine], RepoOptions(max_batch=32)),
        "min_batch": lambda: ([fake_engine(tmp_path, "9.0", onnx_model, low=(2, 1, 256, 256))], RepoOptions()),
        "mixed": lambda: ([engine, onnx_model], RepoOptions()),
        "python_on_gpu": lambda: ([onnx_model], RepoOptions(platform="python", device="gpu")),
        "fp16_on_cpu": lambda: ([onnx_model], RepoOptions(device="cpu", trt_fp16=True)),
        "engine_on_cpu": lambda: ([engine], RepoOptions(device="cpu")),
        "missing": lambda: ([tmp_path / "absent.onnx"], RepoOptions()),
    }
    models, options = requests[case]()
    if case == "changed":
        engine.write_bytes(b"tampered")
    with pytest.raises(CompilerError, match=message) as raised:
        write_repository(models, tmp_path / "repo", options)
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "repo").exists()


def test_cli_writes_the_repository_and_reports_errors_in_one_line(onnx_model, tmp_path, capsys):
    assert compiler_main(["triton-repo", str(onnx_model), "-o", str(tmp_path), "--name", "ct", "--device", "cpu",
                          "--max-batch", "4", "--queue-delay-us", "100", "--warmup", "0"]) == 0
    assert "wrote" in capsys.readouterr().out
    config = parse(tmp_path / "ct/config.pbtxt")
    assert (config.max_batch_size, config.dynamic_batching.max_queue_delay_microseconds) == (4, 100)
    assert not config.model_warmup and config.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU
    assert compiler_main(["triton-repo", str(tmp_path / "nothing.onnx"), "-o", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_text_format_writer_escapes_what_protobuf_reads_back():
    text = render({"name": 'a "b"\\\n\t\x01é', "max_batch_size": 3,
                   "parameters": [{"key": "k", "value": {"string_value": "x"}}]})
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert config.name == 'a "b"\\\n\t\x01é' and config.parameters["k"].string_value == "x"


def test_a_version_folder_appears_whole_or_not_at_all(onnx_model, tmp_path, monkeypatch):
    import compiler.triton_repo as triton_repo

    write_repository([onnx_model], tmp_path, RepoOptions())
    real_copy = triton_repo.shutil.copyfile

    def copy_then_fail(source, target):
        real_copy(source, target)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(triton_repo.shutil, "copyfile", copy_then_fail)
    with pytest.raises(OSError):
        write_repository([onnx_model], tmp_path, RepoOptions())
    assert sorted(p.name for p in (tmp_path / "medclear").iterdir()) == ["1", "config.pbtxt"]  # no 2, no leftovers

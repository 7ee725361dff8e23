"""Training across processes (trainer/distributed.py): sharded step-seeded batches, and a real
``torchrun --nproc_per_node=2`` run on gloo (CPU) whose replicas agree, whose checkpoint reloads,
and whose weights equal a single process's at the same effective batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainer import distributed
from trainer.__main__ import main as trainer_main
from trainer.checkpoint import load_checkpoint, load_model
from trainer.distributed import Distributed, ShardedBatches, weights_digest
from trainer.train import StepBatches

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "trainer" / "configs"
STEPS = ["--set", "train.steps=6", "--set", "train.eval_every=3", "--set", "train.threads=1"]


def test_shards_of_a_step_are_its_global_batch_and_resume_exactly():
    whole = list(StepBatches(1000, 8, seed=3, start=0, stop=10))
    shards = [list(ShardedBatches(StepBatches(1000, 8, 3, 0, 10), rank, 2)) for rank in range(2)]
    assert [a + b for a, b in zip(*shards)] == whole
    resumed = list(ShardedBatches(StepBatches(1000, 8, 3, 6, 10), 1, 2))
    assert resumed == shards[1][6:] and len(ShardedBatches(StepBatches(1000, 8, 3, 6, 10), 1, 2)) == 4


class Tiny(torch.nn.Linear):
    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        return self(x), {}


def test_a_single_process_is_left_alone():
    alone = distributed.start(torch.device("cpu"), environ={})
    sampler = StepBatches(10, 4, 0, 0, 2)
    model = Tiny(2, 2)
    assert not alone.active and alone.is_main and alone.shard(sampler) is sampler and alone.global_batch(4) == 4
    assert alone.forward(model) == model.forward_with_aux
    assert alone.agree(True) and alone.from_main(2.5) == 2.5 and alone.replica_digests(model) == [weights_digest(model)]
    with pytest.raises(ValueError, match="RANK, LOCAL_RANK unset: start the run with torchrun"):
        distributed.start(torch.device("cpu"), environ={"WORLD_SIZE": "2"})
    assert Distributed(torch.device("cpu"), rank=1, world_size=2).global_batch(4) == 8


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("teacher")
    assert trainer_main(["teacher", "--config", str(CONFIGS / "tiny_teacher.json"), "--out", str(out),
                         "--set", "train.steps=2", "--set", "train.eval_every=2"]) == 0
    return out / "best.pt"


def torchrun(*args: str, processes: int = 2) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=N -m trainer ARGS`` from the repository root."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
         "-m", "trainer", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )


@pytest.mark.slow
def test_two_gloo_processes_train_identical_replicas_equal_to_one_process(teacher, tmp_path, capsys):
    run = tmp_path / "ddp"
    result = torchrun("distill", "--config", str(CONFIGS / "tiny_distill.json"), "--out", str(run),
                      "--teacher", str(teacher), "--set", "train.batch_size=2", *STEPS)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    events = {r["event"]: r for r in records if "event" in r}
    assert events["distributed"]["world_size"] == 2 and events["distributed"]["global_batch"] == 4
    assert events["replicas"]["agree"] and len(events["replicas"]["weights_sha256"]) == 2
    assert sum(1 for r in records if r.get("event") == "start") == 1  # rank 0 alone logs
    model, checkpoint = load_model(run / "last.pt")
    assert checkpoint["step"] == 6 and weights_digest(model) == events["replicas"]["weights_sha256"][0]
    assert load_model(run / "best.pt")[1]["stage"] == "distill"

    # One process at the effective batch (4) sees the same samples: the same weights up to float order.
    assert trainer_main(["distill", "--config", str(CONFIGS / "tiny_distill.json"), "--out", str(tmp_path / "one"),
                         "--teacher", str(teacher), "--set", "train.batch_size=4", *STEPS]) == 0
    capsys.readouterr()
    single = load_checkpoint(tmp_path / "one" / "last.pt")["state_dict"]
    for name, value in load_checkpoint(run / "last.pt")["state_dict"].items():
        torch.testing.assert_close(value, single[name], atol=1e-6, rtol=1e-5, msg=name)

from collections import Counter
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lmforge.config import load_config
from lmforge.errors import LmforgeError, TrainingDiverged
from lmforge.model import GPT
from lmforge.objectives import CausalLM
from lmforge.folders.run import RunDir, TrainRecord, ValRecord
from lmforge.folders.tokenized import load_shards
from lmforge.training.checkpoint import load_model_weights, model_state
from lmforge.training.data import TrainLoader, eval_batches, rank_eval_batches
from lmforge.model import model_config
from lmforge.training.trainer import (WARMUP_STEPS, NonFiniteGuard, apply_update, forward_backward, micro_batches_per_rank,
                                       train)
from lmforge.training.distributed import DistInfo
from lmforge.training.optim import build_optimizers, lr_factor
from conftest import tiny_overrides

import contextlib

quiet = lambda *_: None  # noqa: E731


def trained(cfg, **kw):
    return train(cfg, data=[str(kw.pop("tokens"))], log=quiet, **kw)


def test_loss_falls_and_run_folder_is_complete(tiny_config, tokens_dir):
    cfg = tiny_config(**{"train.max_steps": 150, "train.batch_size": 8, "train.lr": 1e-2})
    summary = trained(cfg, tokens=tokens_dir)
    run = cfg.run.out
    records = [r for r in RunDir(run).metrics() if isinstance(r, TrainRecord)]
    losses = [r.loss for r in records]
    norms = [r.grad_norm for r in records]
    assert all(0 < n < float("inf") for n in norms)
    assert losses[-1] < math.log(512) - 1.0  # from chance (uniform over the vocabulary)
    assert losses[-1] < losses[0]
    assert summary["val_loss"] < summary["unigram_val_loss"]
    folder = RunDir(run)
    for path in (folder.config_path, folder.metrics_path, folder.tokenizer_path, folder.summary_path):
        assert path.is_file(), path
    ckpt = folder.latest_checkpoint()
    assert set(ckpt.path.iterdir()) == {ckpt.model_file, ckpt.state_tensors, ckpt.state_json}
    written = folder.summary()
    assert None not in (written.val_loss, written.perplexity, written.bits_per_byte)
    assert folder.config.model == cfg.model and folder.config.train == cfg.train
    # saved relative to the run folder, and resolved back to the folder trained on
    assert not Path(folder.config.data.tokenized).is_absolute()
    assert folder.tokens_dir.resolve() == Path(tokens_dir).resolve()


def _one_step_grads(tokens_dir, batch_size, grad_accum):
    torch.manual_seed(0)
    cfg = load_config("tiny", overrides=tiny_overrides(**{"train.batch_size": batch_size, "train.grad_accum": grad_accum,
                                                          "train.grad_clip": 0.0}))
    model = GPT(model_config(cfg, 512))
    loader = TrainLoader(load_shards(tokens_dir, "train"), 32, 8, seed=1)
    big = loader.next_batch()  # the same 8 windows, split differently
    windows = list(big.split(batch_size))
    loss, _ = forward_backward(model, CausalLM(), windows, torch.device("cpu"), contextlib.nullcontext(), DistInfo())
    return loss, [p.grad.clone() for p in model.parameters()]


def test_gradient_accumulation_equals_one_large_batch(tokens_dir):
    # Compared before the optimizer: Adam's first update is ~sign(g), which turns float noise in
    # near-zero gradients into full-size differences and would test Adam, not accumulation.
    loss1, g1 = _one_step_grads(tokens_dir, 8, 1)
    loss4, g4 = _one_step_grads(tokens_dir, 2, 4)
    assert loss1.item() == pytest.approx(loss4.item(), rel=1e-6)
    for a, b in zip(g1, g4):
        assert torch.allclose(a, b, atol=1e-7, rtol=1e-4)


def _weights(run):
    return load_file(str(RunDir(run).latest_checkpoint().model_file))


@pytest.mark.parametrize("optimizer,objective", [("adamw", "causal"), ("muon", "causal"), ("adamw", "masked")])
def test_resume_is_bit_identical(tmp_path, tokens_dir, optimizer, objective):
    over = tiny_overrides(**{"train.max_steps": 24, "train.optimizer": optimizer, "train.checkpoint_interval": 5,
                             "train.objective": objective, "train.whole_word_mask": objective == "masked"})
    straight = load_config("tiny", overrides=over + [f"run.out={tmp_path / 'a'}"])
    trained(straight, tokens=tokens_dir)
    split = load_config("tiny", overrides=over + [f"run.out={tmp_path / 'b'}"])
    first = trained(split, tokens=tokens_dir, stop_at=13)
    assert first["complete"] is False and RunDir(tmp_path / "b").latest_checkpoint().step == 13
    with pytest.raises(LmforgeError, match="already holds a run"):
        trained(split, tokens=tokens_dir)
    second = trained(split, tokens=tokens_dir, resume=True)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert second["val_loss"] == RunDir(tmp_path / "a").summary().val_loss
    records = RunDir(tmp_path / "b").metrics()
    steps = [r.step for r in records if isinstance(r, TrainRecord)]
    assert steps == sorted(set(steps))  # no duplicated events after the resume


def test_only_the_writing_rank_keeps_the_gathered_weights():
    """Under FSDP every rank takes part in gathering each tensor; a rank that does not write the
    checkpoint drops each one at once instead of holding a whole model in host memory."""
    model = GPT(model_config(load_config("tiny", overrides=tiny_overrides()), 512))
    assert model_state(model, keep=False) == {}
    kept = model_state(model)
    assert "lm_head.weight" not in kept and torch.equal(kept["wte.weight"], model.wte.weight)  # the tied head once


def test_resume_refuses_a_changed_architecture(tmp_path, tokens_dir):
    over = tiny_overrides(**{"train.max_steps": 6})
    cfg = load_config("tiny", overrides=over + [f"run.out={tmp_path / 'r'}"])
    trained(cfg, tokens=tokens_dir, stop_at=3)
    other = load_config("tiny", overrides=over + [f"run.out={tmp_path / 'r'}", "model.n_embd=64"])
    with pytest.raises(LmforgeError, match="model.n_embd"):
        trained(other, tokens=tokens_dir, resume=True)
    wrong = GPT(model_config(other, 512))
    with pytest.raises(LmforgeError, match="another architecture"):
        load_model_weights(wrong, RunDir(tmp_path / "r").latest_checkpoint().model_file)


def test_corpus_too_small_for_one_batch(tiny_config, tokens_dir):
    cfg = tiny_config(**{"train.batch_size": 100000})
    with pytest.raises(LmforgeError, match="corpus too small for one batch"):
        trained(cfg, tokens=tokens_dir)


def test_divergence_is_reported_not_trained_through(tiny_config, tokens_dir):
    cfg = tiny_config(**{"train.lr": 1e30, "train.warmup_steps": 0, "train.grad_clip": 0.0, "train.max_steps": 30})
    with pytest.raises(TrainingDiverged, match="diverged"):
        trained(cfg, tokens=tokens_dir)


def test_loader_covers_each_window_once_per_epoch(tokens_dir):
    shards = load_shards(tokens_dir, "train")
    loader = TrainLoader(shards, 32, 4, seed=0)
    n = loader.per_rank // 4
    seen = Counter(tuple(r) for r in torch.cat([loader.next_batch() for _ in range(n)]).tolist())
    every = Counter(tuple(r) for r in loader.index.gather(np.arange(len(loader.index))).tolist())
    assert sum(seen.values()) == 4 * n > 0.9 * len(loader.index)
    assert not seen - every  # no window more often than it occurs in the data
    state = loader.state_dict()
    nxt = loader.next_batch()
    again = TrainLoader(shards, 32, 4, seed=0)
    again.load_state_dict(state)
    assert torch.equal(again.next_batch(), nxt)


@pytest.mark.parametrize("world_size", [2, 3])
def test_validation_batches_are_split_over_the_ranks_each_scored_once(tokens_dir, world_size):
    shards = load_shards(tokens_dir, "val")
    whole = list(eval_batches(shards, 16, 3, max_tokens=16 * 3 * 7 - 16))  # 7 batches, the last one short
    assert len(whole) == 7 and len(whole[-1]) == 2
    shares = [list(rank_eval_batches(shards, 16, 3, 16 * 3 * 7 - 16, rank, world_size)) for rank in range(world_size)]
    assert len({len(share) for share in shares}) == 1  # as many forwards on every rank (FSDP gathers in each)
    scored = sorted((number, batch) for share in shares for number, batch, is_scored in share if is_scored)
    assert [number for number, _ in scored] == list(range(7))
    assert all(torch.equal(batch, whole[number]) for number, batch in scored)


def test_schedules():
    cfg = load_config("tiny", overrides=["train.max_steps=100", "train.warmup_steps=10", "train.min_lr_ratio=0.1"]).train
    assert lr_factor(0, cfg) == pytest.approx(0.1) and lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(99, cfg) == pytest.approx(0.1, abs=0.01)
    factors = [lr_factor(s, cfg) for s in range(10, 100)]
    assert factors == sorted(factors, reverse=True)
    cfg.schedule, cfg.decay_fraction = "wsd", 0.2
    assert lr_factor(50, cfg) == 1.0 and lr_factor(80, cfg) == 1.0
    decay = np.array([lr_factor(s, cfg) for s in range(80, 100)])  # a straight line from the peak to the floor
    assert np.diff(decay) == pytest.approx(np.full(19, -0.9 / 19))


@pytest.mark.parametrize("schedule", ["cosine", "wsd"])
@pytest.mark.parametrize("warmup_steps", [0, 10])
@pytest.mark.parametrize("max_steps", [2, 37, 100])
def test_schedule_ends_at_min_lr_ratio_on_the_last_step(schedule, warmup_steps, max_steps):
    """The last optimizer step a run takes (max_steps - 1, counted from 0) has lr = lr * min_lr_ratio."""
    cfg = load_config("tiny", overrides=[f"train.max_steps={max_steps}", f"train.warmup_steps={min(warmup_steps, max_steps - 1)}",
                                         "train.min_lr_ratio=0.1", f"train.schedule={schedule}"]).train
    assert lr_factor(max_steps - 1, cfg) == 0.1
    assert lr_factor(max_steps - 2, cfg) > 0.1


def decay_of(optimizers) -> dict[int, float]:
    return {id(p): g["weight_decay"] for opt in optimizers for g in opt.param_groups for p in g["params"]}


def test_muon_takes_hidden_matrices_only():
    cfg = load_config("tiny", overrides=["train.optimizer=muon", "train.weight_decay=0.1"])
    model = GPT(model_config(cfg, 512))
    adam, muon = build_optimizers(model, cfg.train)
    muon_params = {id(p) for g in muon.param_groups for p in g["params"]}
    assert id(model.wte.weight) not in muon_params
    assert id(model.blocks[0].attn.qkv.weight) in muon_params and id(model.blocks[0].mlp.down.weight) in muon_params
    # the rule the config reference states: Muon's matrices decay, the embedding and head do not (nanochat)
    decay = decay_of([adam, muon])
    assert decay[id(model.blocks[0].attn.qkv.weight)] == 0.1 and decay[id(model.wte.weight)] == 0.0


def test_adamw_decays_every_matrix():
    cfg = load_config("tiny", overrides=["train.weight_decay=0.1"])
    model = GPT(model_config(cfg, 512))
    decay = decay_of(build_optimizers(model, cfg.train))
    assert decay[id(model.wte.weight)] == decay[id(model.lm_head.weight)] == decay[id(model.blocks[0].mlp.down.weight)] == 0.1


def test_update_reports_the_gradient_norm_before_clipping():
    torch.manual_seed(0)
    cfg = load_config("tiny", overrides=tiny_overrides())
    model = GPT(model_config(cfg, 512))
    optimizers = build_optimizers(model, cfg.train)
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    expected = 0.5 * sum(p.numel() for p in model.parameters()) ** 0.5
    norm = apply_update(model, optimizers, torch.tensor(3.0), 1.0, NonFiniteGuard(torch.device("cpu")))
    assert norm.item() == pytest.approx(expected, rel=1e-5)
    assert all(p.grad is None for p in model.parameters())


def test_muon_orthogonalises_q_k_v_gate_and_up_apart():
    """One step of lmforge's Muon on the stacked QKV and gate-up weights equals torch.optim.Muon
    on Q, K, V, gate and up as separate matrices, and differs from Muon on the stacks."""
    cfg = load_config("tiny", overrides=["train.optimizer=muon", "model.n_kv_head=2", "train.weight_decay=0.1"])
    torch.manual_seed(0)
    model = GPT(model_config(cfg, 512))
    block = model.blocks[0]
    stacks = {"qkv": block.attn.qkv.weight, "gate_up": block.mlp.gate_up.weight}
    splits = {"qkv": model.stacked_matrices()["blocks.0.attn.qkv.weight"], "gate_up": [model.cfg.mlp_hidden] * 2}
    grads = {k: torch.randn_like(w) for k, w in stacks.items()}
    apart = {k: [m.clone().requires_grad_() for m in w.detach().split(splits[k])] for k, w in stacks.items()}
    whole = {k: w.detach().clone().requires_grad_() for k, w in stacks.items()}
    for k in stacks:
        stacks[k].grad = grads[k].clone()
        whole[k].grad = grads[k].clone()
        for m, g in zip(apart[k], grads[k].split(splits[k])):
            m.grad = g.clone()
    t = cfg.train
    _, muon = build_optimizers(model, t)
    reference = dict(lr=t.muon_lr, weight_decay=t.weight_decay, momentum=t.muon_momentum, nesterov=True,
                     adjust_lr_fn="original")
    torch.optim.Muon([m for ms in apart.values() for m in ms], **reference).step()
    torch.optim.Muon(list(whole.values()), **reference).step()
    for p in model.parameters():  # only the two stacks of block 0 take this step
        if all(p is not w for w in stacks.values()):
            p.grad = None
    muon.step()
    for k, w in stacks.items():
        assert torch.allclose(w, torch.cat(apart[k]), rtol=1e-6, atol=1e-7), k
        assert not torch.allclose(w, whole[k], rtol=1e-4, atol=1e-6), k


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_a_non_finite_step_is_skipped_on_the_device(optimizer):
    """A NaN gradient (or loss) leaves weights and optimizer state exactly as they were, is counted,
    and the next sound step updates as usual; the host reads nothing until `check`."""
    cfg = load_config("tiny", overrides=[f"train.optimizer={optimizer}"])
    torch.manual_seed(0)
    model = GPT(model_config(cfg, 512))
    optimizers = build_optimizers(model, cfg.train)
    guard = NonFiniteGuard(torch.device("cpu"))
    x = torch.randint(0, 512, (2, 17))

    def backward():
        loss = model(x[:, :-1], targets=x[:, 1:])
        loss.backward()
        return loss

    apply_update(model, optimizers, backward(), cfg.train.grad_clip, guard)  # a sound step: state exists
    before = [p.detach().clone() for p in model.parameters()]
    states = [{k: v.clone() for k, v in opt.state[p].items()} for opt in optimizers for p in opt.state]
    loss = backward()
    model.blocks[0].mlp.down.weight.grad[0, 0] = float("nan")
    apply_update(model, optimizers, loss, cfg.train.grad_clip, guard)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    after = [{k: v for k, v in opt.state[p].items()} for opt in optimizers for p in opt.state]
    for s0, s1 in zip(states, after):
        assert all(torch.equal(s0[k], s1[k]) for k in s0)
    assert guard.check(2) == 1
    apply_update(model, optimizers, backward(), cfg.train.grad_clip, guard)
    assert not torch.equal(before[0], next(model.parameters()))
    assert guard.check(3) == 1 and guard.streak.item() == 0
    apply_update(model, optimizers, torch.tensor(float("inf")), cfg.train.grad_clip, guard)  # a non-finite loss too
    assert guard.check(4) == 2


def test_summary_reports_steady_state_and_warm_up_apart(tiny_config, tokens_dir):
    summary = trained(tiny_config(**{"train.max_steps": 12}), tokens=tokens_dir)
    assert summary["warmup_steps"] == WARMUP_STEPS and summary["warmup_s"] > 0
    assert summary["train_time_s"] >= summary["warmup_s"]
    assert summary["tokens_per_s"] > 0 and summary["skipped_steps"] == 0
    # the steady seconds are the rest of the training time; on a fast machine they are a fraction of a
    # second, so compare seconds and allow for the millisecond rounding of both figures
    steady_tokens = (12 - WARMUP_STEPS) * summary["tokens_trained"] / 12
    steady_s = summary["train_time_s"] - summary["warmup_s"]
    assert steady_tokens / summary["tokens_per_s"] == pytest.approx(steady_s, abs=1.5e-3, rel=1e-3)
    assert all(r.skipped_steps == 0 for r in RunDir(tiny_config().run.out).metrics() if isinstance(r, TrainRecord))


def test_grad_accum_that_does_not_split_over_the_ranks_is_refused():
    assert micro_batches_per_rank(8, 2) == 4 and micro_batches_per_rank(8, 1) == 8
    with pytest.raises(LmforgeError, match="train.grad_accum=6 .* 4 processes"):
        micro_batches_per_rank(6, 4)


def test_a_repeated_sigterm_is_one_stop_request_a_second_ctrl_c_stops_at_once():
    """A sweep worker gets its parent-death SIGTERM once per thread of the dying sweep process:
    all of them must still mean "finish the step and save"."""
    import os
    import signal

    from lmforge.training.trainer import StopFlag

    before = signal.getsignal(signal.SIGTERM)
    with StopFlag() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs between the two
        assert stop.requested
    with pytest.raises(KeyboardInterrupt), StopFlag() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested
        os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) == before


def test_mfu_and_hfu_count_the_flops_that_ran(tiny_config, tokens_dir, tmp_path, monkeypatch):
    """Issue 24: on a CPU the masked loss takes only its targets (~15% of tokens) through the output head,
    and MFU charged the whole head; HFU adds what train.recompute runs again. Both against
    FlopCounterMode over every training step (SDPA on its math path, whose matmuls it counts)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from lmforge.training import trainer

    counted = []
    step = trainer.forward_backward

    def counting(*args, **kwargs):
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            out = step(*args, **kwargs)
        counted.append(counter.get_total_flops())
        return out

    monkeypatch.setattr(trainer, "forward_backward", counting)
    summaries = {}
    for recompute in ("none", "full"):
        counted.clear()
        cfg = tiny_config(**{"train.max_steps": 8, "train.objective": "masked", "train.recompute": recompute})
        cfg.run.out = str(tmp_path / recompute)
        summary = summaries[recompute] = trained(cfg, tokens=tokens_dir)
        ran = sum(counted) / summary["tokens_trained"]  # FLOPs per token, recomputation included
        per_flop = summary["tokens_per_s"] / summary["peak_flops"]
        if recompute == "none":
            assert summary["flops_per_token"] == pytest.approx(ran, rel=0.01)
        assert summary["hfu"] == pytest.approx(per_flop * ran, rel=0.01, abs=1e-4)
        assert summary["mfu"] == pytest.approx(per_flop * summary["flops_per_token"], abs=1e-4)
        records = [r for r in RunDir(cfg.run.out).metrics() if isinstance(r, TrainRecord)]
        assert all((r.hfu == r.mfu) == (recompute == "none") for r in records)
    none, full = summaries["none"], summaries["full"]
    assert full["flops_per_token"] == none["flops_per_token"]  # the model's FLOPs (the same masks): no recomputation
    assert full["hfu"] / full["mfu"] > 1.2  # each block's forward again, less its down projection


def test_final_figure_is_the_curves_last_point_and_the_baseline_is_on_its_windows(tiny_config, tokens_dir):
    """Periodic evaluations on 2,048 tokens, final_eval_tokens 1,024: the final evaluation still
    covers the curve's windows, is logged as its last point, and the unigram baseline beside it is
    taken over exactly its targets (counted here from the shards, independently of lmforge)."""
    cfg = tiny_config(**{"train.max_steps": 20, "train.eval_interval": 10, "train.eval_tokens": 2048,
                         "train.final_eval_tokens": 1024})
    summary = trained(cfg, tokens=tokens_dir)
    curve = [r for r in RunDir(cfg.run.out).metrics() if isinstance(r, ValRecord)]
    assert [r.step for r in curve] == [10, 20]
    assert curve[-1].val_loss == summary["val_loss"] and curve[-1].val_tokens == summary["val_tokens"] == 2048
    assert curve[0].val_tokens == 2048

    seq_len, vocab = cfg.model.seq_len, 512
    train_tokens = np.concatenate([np.asarray(s) for s in load_shards(tokens_dir, "train")])
    logp = np.log(np.bincount(train_tokens, minlength=vocab) + 1.0) - np.log(len(train_tokens) + vocab)
    targets = []  # each shard cut into windows of seq_len + 1 at stride seq_len; a window's targets are all but its first
    for shard in load_shards(tokens_dir, "val"):
        shard = np.asarray(shard)
        targets += [shard[start + 1:start + seq_len + 1] for start in range(0, len(shard) - seq_len, seq_len)]
    scored = np.concatenate(targets[:2048 // seq_len])
    assert summary["unigram_val_loss"] == pytest.approx(-logp[scored].mean(), rel=1e-12)
    whole = np.concatenate(targets)
    assert abs(-logp[whole].mean() - summary["unigram_val_loss"]) > 1e-3  # the split's other windows differ


# ---------------------------------------------------------------- the state a checkpoint holds, and the loop's parts

def test_the_train_state_a_checkpoint_saves_is_the_one_it_loads(tmp_path, tokens_dir):
    """TrainState.state_dict() is what a checkpoint holds besides the weights, in the shape
    load_checkpoint gives back: saved and restored cannot drift apart."""
    import json

    from lmforge.training.checkpoint import load_checkpoint, save_checkpoint
    from lmforge.training.state import TrainState

    cfg = load_config("tiny", overrides=tiny_overrides())
    model = GPT(model_config(cfg, 512))
    loader = TrainLoader(load_shards(tokens_dir, "train"), 32, 4, seed=3)
    state = TrainState(build_optimizers(model, cfg.train), loader, schedule_steps=20)
    windows = [loader.next_batch()]
    for _ in range(2):
        state.set_lr(cfg.train)
        loss, _ = forward_backward(model, CausalLM(), windows, torch.device("cpu"), contextlib.nullcontext(), DistInfo())
        apply_update(model, state.optimizers, loss, 1.0, NonFiniteGuard(torch.device("cpu")))
        state.advance(128)
    state.train_time_s = 1.5
    saved = state.state_dict()
    ckpt = save_checkpoint(RunDir(tmp_path / "r"), model, saved, cfg.to_dict(), keep=1)
    other_model = GPT(model_config(cfg, 512))
    other = TrainState(build_optimizers(other_model, cfg.train),
                       TrainLoader(load_shards(tokens_dir, "train"), 32, 4, seed=3), schedule_steps=99)
    torch.manual_seed(123)  # the restored RNG must replace this
    other.load_state_dict(load_checkpoint(ckpt, other_model, other.optimizers))
    back = other.state_dict()
    for key in ("step", "tokens", "train_time_s", "loader", "schedule_steps"):
        assert back[key] == saved[key], key
    assert torch.equal(back["rng"]["torch"], saved["rng"]["torch"])
    for a, b in zip(back["optimizers"], saved["optimizers"]):
        assert a["param_groups"] == json.loads(json.dumps(b["param_groups"]))  # JSON keeps tuples as lists
        for pid in b["state"]:
            for k, v in b["state"][pid].items():
                assert torch.equal(torch.as_tensor(a["state"][pid][k]), torch.as_tensor(v)), (pid, k)
    assert back["step"] == 2 and back["tokens"] == 256


def test_a_checkpoint_of_the_older_format_resumes_bit_identically(tmp_path, tokens_dir):
    """Checkpoints written before the lr schedule's length was saved (state.json without
    `schedule_steps`) resume as before: the schedule spans their config's max_steps."""
    import json

    over = tiny_overrides(**{"train.max_steps": 16, "train.checkpoint_interval": 4})
    straight = load_config("tiny", overrides=over + [f"run.out={tmp_path / 'a'}"])
    trained(straight, tokens=tokens_dir)
    split = load_config("tiny", overrides=over + [f"run.out={tmp_path / 'b'}"])
    trained(split, tokens=tokens_dir, stop_at=9)
    state_json = RunDir(tmp_path / "b").latest_checkpoint().state_json
    record = json.loads(state_json.read_text())
    del record["schedule_steps"]
    state_json.write_text(json.dumps(record, indent=1))
    trained(split, tokens=tokens_dir, resume=True)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_the_trainer_sets_its_attributes_in_one_place_and_the_clock_writes_into_nothing():
    """Every attribute of the Trainer is first set in __init__ (none appears later, so nothing asks
    `hasattr`), and the step clock returns the seconds it measured rather than adding them to its owner."""
    import ast
    import inspect

    import lmforge.training.trainer as trainer_module

    tree = ast.parse(inspect.getsource(trainer_module))
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    first = {}
    for fn in (f for f in classes["Trainer"].body if isinstance(f, ast.FunctionDef)):
        for node in ast.walk(fn):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and \
                    isinstance(node.value, ast.Name) and node.value.id == "self":
                first.setdefault(node.attr, fn.name)
    assert {a: m for a, m in first.items() if m != "__init__"} == {}
    assert "hasattr" not in inspect.getsource(trainer_module.Trainer)
    clock = trainer_module.StepClock(torch.device("cpu"), step=0, warmup_until=1)
    assert clock.lap(1) >= 0.0 and clock.warmup_steps == 1


def test_progress_is_plain_dated_lines_when_stdout_is_not_a_terminal(tiny_config, tokens_dir):
    """Written to a log file (stdout not a terminal: pytest's capture), a run prints nanoGPT's plain
    line per log record, dated, never a bar's carriage-return frames; and it says before the final
    evaluation that it starts (it was silent for a minute on a large split)."""
    import re

    lines = []
    cfg = tiny_config(**{"train.progress": True, "train.max_steps": 10, "train.log_interval": 5,
                         "train.eval_interval": 5})
    summary = train(cfg, data=[str(tokens_dir)], log=lines.append)
    dated = [line for line in lines if re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d step (5|10)/10: loss \d+\.\d{4} .*",
                                                    line)]
    assert len(dated) == 2, lines
    # an evaluation's line is dated as the step lines are (the trial's log had it alone undated)
    assert [line for line in lines if re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d step 5: val loss .*", line)], lines
    assert not any("\r" in line for line in lines)
    said = [i for i, line in enumerate(lines) if line.startswith(("train: final evaluation", "train: done"))]
    assert len(said) == 2 and lines[said[0]].startswith("train: final evaluation")
    assert summary["tokens_trained"] == 10 * cfg.tokens_per_step()  # the one owner of tokens per step


def test_a_sources_kind_is_saved_beside_its_source_relative_to_the_run(tmp_path, monkeypatch):
    """config.yaml keeps data.sources relative to the run folder (issue 28); a data.kinds entry names
    its source as data.sources does, so it must move with it or the saved run names no source."""
    from lmforge.config import load_config
    from lmforge.data.sources import source_kinds
    from lmforge.folders.run import RunDir
    from lmforge.training.trainer import config_for_disk, sources_from_disk

    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "plays.jsonl").write_text("{}\n")
    inside = tmp_path / "runs" / "r1" / "prepared" / "clean"  # lmforge run's own, named absolute
    cfg = load_config("tiny", overrides=[f"data.sources=[corpus/plays.jsonl, builtin, {inside}, /usr/share/doc]",
                                         "data.kinds=[corpus/plays.jsonl=play]"])
    saved = config_for_disk(cfg, RunDir(tmp_path / "runs" / "r1"))
    assert saved.data.sources == ["../../corpus/plays.jsonl", "builtin", "prepared/clean", "/usr/share/doc"]
    assert saved.data.kinds == ["../../corpus/plays.jsonl=play"]
    assert source_kinds(saved.data.sources, saved.data.kinds) == ["prose", "", "", ""]
    monkeypatch.chdir(tmp_path / "corpus")  # read back from elsewhere: the paths name the same file
    assert [Path(p).resolve() for p in sources_from_disk(saved.data.sources, RunDir(tmp_path / "runs" / "r1"))][0] == \
        (tmp_path / "corpus" / "plays.jsonl").resolve()


def test_a_model_no_better_than_the_unigram_baseline_is_said_to_be(tiny_config, tokens_dir):
    """A run that ended worse than counting tokens (issue 28's mixed folder: 10.71 against a unigram
    baseline of 6.54, perplexity 44,882) said nothing. Two steps have not learned yet: a warning says
    so and what to do; the final evaluation line names the tokens it scores, not the cap."""
    from lmforge.training.trainer import train

    cfg = tiny_config(**{"train.max_steps": 2})
    said: list[str] = []
    summary = train(cfg, data=[str(tokens_dir)], log=said.append)
    assert summary["val_loss"] >= summary["unigram_val_loss"]
    warning = [line for line in said if "no better than the unigram baseline" in line]
    assert len(warning) == 1 and "has not learned yet (train more steps" in warning[0], said
    final = next(line for line in said if line.startswith("train: final evaluation on"))
    assert final.startswith(f"train: final evaluation on {summary['val_tokens'] // 32:,} windows of 32 tokens "
                            f"({summary['val_tokens']:,} validation tokens)"), final

"""Training options of conf/model (issue 12): the step of the best checkpoint in metrics.json and the summaries;
the EMA of G's weights (analytic after k steps, used for evaluation, resumable); the density output layer (n ≥ 0,
∫n = N per instance, refused for n_int ↦ V); the cosine schedule; the speed switches keep the step's arithmetic
(joint D pass = two passes, fp32 output layer under bf16 autocast)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from tiny import ROOT, compose_train, run_tiny, tiny_overrides

from qdgan import density, ema, fast, gan_step, optim
from qdgan.pix2pix import Pix2Pix
from qdgan.scaling import DataStats, with_electrons
from qdgan.train import callbacks
from qdgan.train.run import build_model

VOLATILE = ("train_seconds", "run_dir", "best_checkpoint")


def tiny_model(*overrides: str, mapping: str = "v_to_nint") -> Pix2Pix:
    cfg = compose_train([f"mapping={mapping}", "generator.ngf=4", "discriminator.ndf=4", *overrides])
    model = build_model(cfg)
    model.set_data_stats(DataStats(0.0, 1.0, 0.0, 0.05, torch.zeros(64, 64), pixel_area=0.25, n_electrons=2,
                                   input_code=(0.0, 0.0, 1.0)))
    return model


class Weights(L.Callback):
    """G's weights after every training batch."""

    def __init__(self) -> None:
        self.seen: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.seen.append({k: v.detach().clone() for k, v in pl_module.generator.state_dict().items()})


def fit(model: Pix2Pix, steps: int, batch: int = 4, seed: int = 0, callbacks_: list | None = None) -> None:
    """`steps` generator steps of the real training path on random in-memory batches."""
    from qdgan.datamodule import TensorBatches

    g = torch.Generator().manual_seed(seed)
    x, y = (torch.rand(batch * steps, 1, 64, 64, generator=g) * 2 - 1 for _ in range(2))
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=gan_step.optimizer_steps(model, steps), logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, callbacks=callbacks_ or [])
    trainer.fit(model, train_dataloaders=TensorBatches(x, y, batch, shuffle=False))


# --- the step of the best checkpoint --------------------------------------------------------------------------


def test_metrics_and_summaries_give_the_step_of_the_best_checkpoint(tiny_data, tmp_path, monkeypatch, capsys):
    def falling_r2(self):  # validation R² that only falls: the best checkpoint is the first validation's
        self.log("val/r2", torch.tensor(1.0 / max(1.0, float(self.generator_steps))))

    monkeypatch.setattr(Pix2Pix, "on_validation_epoch_end", falling_r2)
    run_tiny(compose_train(tiny_overrides(tiny_data, tmp_path)), tmp_path)  # 6 steps, validation every 3
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["best_step"] == 3 and metrics["generator_steps"] == 6
    assert metrics["best_val_r2"] == pytest.approx(1 / 3)
    best = torch.load(tmp_path / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    assert int(best["state_dict"]["generator_steps"]) == 3
    assert "validation R² 0.3333 at generator step 3 of 6" in capsys.readouterr().out

    from qdgan.study.summary import MARKDOWN
    from qdgan.train.logs import WANDB_TABLE, _lookup

    assert _lookup(metrics, WANDB_TABLE["best_step"]) == 3
    assert MARKDOWN["best_step"][0] == "best at step"


# --- EMA ------------------------------------------------------------------------------------------------------


def test_ema_update_is_the_analytic_average_on_a_toy():
    net, avg = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    ema.start(avg, net)
    expected = {k: v.clone() for k, v in net.state_dict().items()}
    for t in range(1, 6):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        d = ema.decay_at(0.9, t)
        assert d == min(0.9, (1 + t) / (10 + t))
        ema.update(avg, net, d)
        expected = {k: d * expected[k] + (1 - d) * v for k, v in net.state_dict().items()}
    for k, v in avg.state_dict().items():
        torch.testing.assert_close(v, expected[k])
        assert not torch.allclose(v, net.state_dict()[k])
    assert not any(p.requires_grad for p in avg.parameters())


def test_ema_of_the_generator_after_k_steps_and_used_for_evaluation():
    torch.manual_seed(0)
    model = tiny_model("model.ema_decay=0.8", "model.density_output=null")  # model(x) is then G's raw output
    start = {k: v.clone() for k, v in model.generator.state_dict().items()}
    seen = Weights()
    fit(model, steps=5, callbacks_=[seen])
    expected = start
    for t, weights in enumerate(seen.seen, start=1):
        d = ema.decay_at(0.8, t)
        expected = {k: d * expected[k] + (1 - d) * v if v.is_floating_point() else v for k, v in weights.items()}
    average, raw = model.generator_ema.state_dict(), model.generator.state_dict()
    for k, v in average.items():
        torch.testing.assert_close(v, expected[k], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(average["down.0.0.weight"], raw["down.0.0.weight"])
    x = torch.rand(2, 1, 64, 64)
    model.eval()
    assert model.eval_generator is model.generator_ema
    torch.testing.assert_close(model(x), model.generator_ema(x))
    assert not torch.allclose(model(x), model.generator(x))


def test_a_run_with_ema_resumed_after_a_crash_equals_the_uninterrupted_run(tiny_data, tmp_path, monkeypatch):
    opts = ("model.ema_decay=0.9", "data.resize=72", "data.flip=true")
    whole, crashed = tmp_path / "whole", tmp_path / "crashed"
    run_tiny(compose_train(tiny_overrides(tiny_data, whole, *opts)), whole)
    original = callbacks.History.on_train_batch_end

    def dying(self, trainer, pl_module, *args):
        original(self, trainer, pl_module, *args)
        if int(pl_module.generator_steps) == 4 and not getattr(dying, "done", False):
            dying.done = True
            raise RuntimeError("simulated crash after generator step 4")

    monkeypatch.setattr(callbacks.History, "on_train_batch_end", dying)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_tiny(compose_train(tiny_overrides(tiny_data, crashed, *opts)), crashed)
    run_tiny(compose_train(tiny_overrides(tiny_data, crashed, *opts)), crashed)  # resumes from step 3

    def result(run_dir: Path) -> tuple[dict, dict]:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
        return ({k: v for k, v in metrics.items() if k not in VOLATILE},
                {k: v for k, v in state.items() if k.startswith("generator_ema.")})

    (m1, e1), (m2, e2) = result(whole), result(crashed)
    assert m1 == m2 and e1 and e1.keys() == e2.keys()
    for k in e1:
        torch.testing.assert_close(e1[k], e2[k], rtol=0, atol=0)


# --- density output layer ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["softplus", "exp"])
def test_density_output_is_nonnegative_and_integrates_to_n(kind):
    model = tiny_model(f"model.density_output={kind}").eval()
    x = torch.rand(3, 1, 64, 64) * 2 - 1
    n = model.unscale_target(model(x)).squeeze(1)
    assert float(n.min()) >= 0
    torch.testing.assert_close(n.sum(dim=(1, 2)) * 0.25, torch.full((3,), 2.0))
    assert not isinstance(model.generator.head[-1], torch.nn.Tanh)


def test_density_output_integrates_to_each_instances_n_in_a_model_of_several_n():
    model = tiny_model("model.density_output=softplus")
    model.condition_on([1, 2, 3])
    model.eval()
    electrons = torch.tensor([1.0, 3.0, 2.0, 3.0])
    x = with_electrons(torch.rand(4, 1, 64, 64) * 2 - 1, electrons, 3)
    n = model.unscale_target(model(x)).squeeze(1)
    assert float(n.min()) >= 0
    torch.testing.assert_close(n.sum(dim=(1, 2)) * 0.25, electrons)
    raw = torch.randn(4, 1, 8, 8, dtype=torch.float64) * 30  # large raw values: no overflow, same charge
    torch.testing.assert_close(density.density(raw, "exp", electrons, 1.0).sum(dim=(1, 2, 3)), electrons)


def test_density_output_trains_and_is_refused_for_a_potential_target(tiny_data, tmp_path):
    metrics = run_tiny(compose_train(tiny_overrides(tiny_data, tmp_path, "model.density_output=softplus",
                                                    "max_steps=2", "val_every_n_steps=2")), tmp_path)
    assert metrics["mean"]["charge_error"] < 1e-4 and math.isfinite(metrics["r2"])
    with pytest.raises(ValueError, match=r"model.density_output=softplus: the target potential is not a density"):
        tiny_model("model.density_output=softplus", mapping="nint_to_v")


# --- learning-rate schedules ------------------------------------------------------------------------------------


def test_cosine_and_linear_schedules():
    cos, lin = optim.lr_factor("cosine", 0.5, 100), optim.lr_factor("linear", 0.5, 100)
    assert cos(0) == cos(50) == lin(50) == 1.0
    assert cos(75) == pytest.approx(0.5) and lin(75) == pytest.approx(0.5)
    assert cos(60) > lin(60) and cos(90) < lin(90)  # half a cosine: slow start, slow end
    assert cos(100) == pytest.approx(0.0) and lin(100) == 0.0 and cos(200) == pytest.approx(0.0)
    model = tiny_model("model.lr_schedule=cosine", "model.lr_decay_start=0", "max_steps=4")
    opts, scheds = model.configure_optimizers()
    assert len(scheds) == 2
    lrs = []
    for _ in range(4):
        for s in scheds:
            s.step()
        lrs.append(opts[0].param_groups[0]["lr"])
    assert lrs == pytest.approx([model.hparams.lr_g * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(1, 5)])
    with pytest.raises(ValueError, match=r"model\.lr_schedule='step'"):
        tiny_model("model.lr_schedule=step")


# --- speed switches keep the arithmetic -----------------------------------------------------------------------


def test_joint_d_pass_computes_what_two_passes_compute():
    torch.manual_seed(1)
    two, one = tiny_model("model.joint_d_pass=false"), tiny_model("model.joint_d_pass=true")
    one.load_state_dict(two.state_dict())
    x, y, fake = (torch.rand(4, 1, 64, 64) * 2 - 1 for _ in range(3))
    losses = []
    for model in (two, one):
        model.train()
        real_logits, fake_logits = gan_step.d_logits(model, x, y, fake)
        loss = 0.5 * (gan_step.adversarial(real_logits, True, "vanilla")
                      + gan_step.adversarial(fake_logits, False, "vanilla"))
        model.discriminator.zero_grad()
        loss.backward()
        losses.append((loss, real_logits, fake_logits))
    for a, b in zip(*losses, strict=True):
        torch.testing.assert_close(a, b)
    for (k, p), q in zip(two.discriminator.named_parameters(), one.discriminator.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=k)
    for (k, a), b in zip(two.discriminator.state_dict().items(), one.discriminator.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=k)  # running statistics: part by part, as two passes update them
    assert any(isinstance(m, fast.SplitBatchNorm2d) for m in one.discriminator.modules())


@pytest.mark.parametrize("switch", ["model.joint_d_pass=true", "model.channels_last=true", "model.flat_adam=true",
                                    "model.fold_output=true"])
def test_a_training_step_with_a_switch_computes_the_papers_gradients(switch):
    """Gradients of one full step (G's from its step, D's from its step) and the statistics; weights after Adam are
    no test: its first step is ±lr wherever a gradient is ~0, whatever the rounding."""
    torch.manual_seed(2)
    paper, fast_ = tiny_model("model=pix2pix_paper"), tiny_model("model=pix2pix_paper", switch)
    fast_.load_state_dict(paper.state_dict())
    for model in (paper, fast_):
        torch.manual_seed(3)  # the same dropout draws (NHWC draws its masks in its memory order: no dropout there)
        if switch == "model.channels_last=true":
            model.generator.apply(lambda m: setattr(m, "p", 0.0) if isinstance(m, torch.nn.Dropout) else None)
        fit(model, steps=1)
    for (k, p), q in zip(paper.named_parameters(), fast_.parameters(), strict=True):
        scale = float(p.grad.abs().max())
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-4 * scale, msg=k)
    for k, v in paper.state_dict().items():
        if "running" in k:
            torch.testing.assert_close(fast_.state_dict()[k], v, rtol=1e-4, atol=1e-6, msg=k)
    assert all(p.requires_grad for p in fast_.discriminator.parameters())  # unfrozen after G's step


def test_bf16_autocast_keeps_the_output_layer_in_fp32():
    model = tiny_model("model.autocast=bf16")
    assert fast.autocast_dtype("bf16", torch.device("cpu")) is torch.bfloat16
    assert fast.autocast_dtype("auto", torch.device("cuda")) is None  # on a GPU the trainer's precision decides
    assert fast.autocast_dtype("none", torch.device("cpu")) is None
    x = torch.rand(2, 1, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.float32
    assert not torch.equal(out, out.bfloat16().float())  # not quantized to bf16's 8 bits
    fit(model, steps=2)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with pytest.raises(ValueError, match=r"model\.autocast='fp16'"):
        tiny_model("model.autocast=fp16")


def test_the_benchmarks_reference_has_our_network_sizes():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from train_speed import Reference

    for ngf in (16, 64):
        ref, ours = Reference(ngf), tiny_model(f"generator.ngf={ngf}", f"discriminator.ndf={ngf}")
        for a, b in ((ref.net_g, ours.generator), (ref.net_d, ours.discriminator)):
            n_ref, n_ours = (sum(p.numel() for p in m.parameters()) for m in (a, b))
            assert 0 <= n_ours - n_ref <= 9 * ngf, (ngf, n_ref, n_ours)  # our norm-free 1st and innermost convs: biases
        ref.optimize_parameters(torch.rand(2, 1, 64, 64), torch.rand(2, 1, 64, 64))


def test_flat_adam_steps_its_parameters_like_adam_and_resumes_either_way():
    shapes = [(8, 4, 4, 4), (4, 1, 4, 4), (5,)]
    torch.manual_seed(0)
    mine = [torch.nn.Parameter(torch.randn(s).contiguous(memory_format=torch.channels_last) if len(s) == 4
                               else torch.randn(s)) for s in shapes]
    plain = [torch.nn.Parameter(p.detach().clone().contiguous()) for p in mine]
    a, b = optim.FlatAdam(mine, lr=1e-2, betas=(0.5, 0.999)), torch.optim.Adam(plain, lr=1e-2, betas=(0.5, 0.999))
    mine[1].grad = None  # as Lightning's module.zero_grad() at the start of a fit does
    for _ in range(3):
        for p, q in zip(mine, plain, strict=True):
            g = torch.randn(p.shape)
            (p * g).sum().backward()  # accumulates into p.grad, a view of the flat gradient buffer
            q.grad = g.clone()
        a.step()
        b.step()
        a.zero_grad()
        b.zero_grad()
    for p, q in zip(mine, plain, strict=True):
        torch.testing.assert_close(p, q)
        assert p.grad is not None and not p.grad.any()
    assert all(p.untyped_storage().data_ptr() == a.flat.untyped_storage().data_ptr() for p in mine)
    assert mine[0].is_contiguous(memory_format=torch.channels_last)
    saved = a.state_dict()
    assert saved["state"][2]["exp_avg"].shape == (5,)
    other = optim.FlatAdam(mine, lr=1e-2)
    other.load_state_dict(saved)  # resumable
    assert other.param_groups[0]["betas"] == (0.5, 0.999)
    torch.testing.assert_close(other.state[other.flat]["exp_avg"], a.state[a.flat]["exp_avg"])
    again = optim.FlatAdam(plain, lr=1e-2)
    again.load_state_dict(b.state_dict())  # a per-tensor Adam's state (NCHW parameters) loads too
    torch.testing.assert_close(again.state_dict()["state"][0]["exp_avg_sq"], b.state_dict()["state"][0]["exp_avg_sq"])
    for overrides, kind in (((), optim.FlatAdam), (("model=pix2pix_paper",), torch.optim.Adam)):
        out = tiny_model(*overrides).configure_optimizers()  # (optimizers, schedulers) with a schedule
        assert type((out[0] if isinstance(out, tuple) else out)[0]) is kind


def test_fold_transposed_conv_is_the_transposed_conv_and_one_channel_maps_get_nhwc_strides():
    torch.manual_seed(0)
    conv = torch.nn.ConvTranspose2d(6, 2, 4, 2, 1).double()
    fold = fast.fold_output(torch.nn.Sequential(torch.nn.ConvTranspose2d(6, 2, 4, 2, 1).double()))[0]
    fold.load_state_dict(conv.state_dict())
    assert type(fold) is fast.FoldConvTranspose2d
    x = torch.randn(3, 6, 5, 5, dtype=torch.float64, requires_grad=True)
    out, ref = fold(x), conv(x)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, [x, *fold.parameters()], g),
                    torch.autograd.grad(ref, [x, *conv.parameters()], g), strict=True):
        torch.testing.assert_close(a, b)
    one = torch.rand(2, 1, 8, 8)
    assert one.contiguous(memory_format=torch.channels_last).stride() == (64, 64, 8, 1)  # NCHW strides: ambiguous
    nhwc = fast.channels_last(one)
    assert nhwc.stride() == (64, 1, 8, 1) and torch.equal(nhwc, one)
    assert torch.nn.functional.conv2d(nhwc, torch.rand(4, 1, 3, 3)).is_contiguous(memory_format=torch.channels_last)


def test_uniform_dropout_draws_bernoulli_masks_and_dense_grad_relu_is_relu():
    drop = fast.uniform_dropout(torch.nn.Sequential(torch.nn.Dropout(0.5)))[0]
    assert isinstance(drop, torch.nn.Dropout)  # MC dropout and eval_dropout find it
    x = torch.ones(200_000)
    out = drop(x)
    assert set(out.unique().tolist()) == {0.0, 2.0} and abs(float((out > 0).float().mean()) - 0.5) < 0.01
    assert torch.equal(drop.eval()(x), x)
    relu = fast.dense_grad_relus(torch.nn.Sequential(torch.nn.ReLU()))[0]
    big = torch.randn(2, 8, 4, 4, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    x = big[:, :4].detach().requires_grad_()  # a strided channel slice, as a skip connection's gradient is
    g = torch.randn(2, 8, 4, 4, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)[:, 4:]
    y = relu(x)
    y.backward(g)
    ref_x = x.detach().clone().requires_grad_()
    torch.relu(ref_x).backward(g)
    assert torch.equal(y, torch.relu(x.detach())) and torch.equal(x.grad, ref_x.grad)


def test_l1_per_electron_weighs_each_instance_by_mean_n_over_its_n():
    """On a model of N = 1…4 an error e on an N map counts e·2.5/N; off (or on a one-N model) it is plain L1."""
    from types import SimpleNamespace

    from qdgan.gan_step import l1_term

    ns = torch.tensor([1.0, 2.0, 3.0, 4.0])
    x = torch.zeros(4, 2, 8, 8)
    x[:, 1] = (ns / 4).view(4, 1, 1)  # the N channel of scaling.with_electrons
    y = torch.zeros(4, 1, 8, 8)
    fake = y + torch.tensor([0.4, 0.2, 0.1, 0.3]).view(4, 1, 1, 1)
    model = SimpleNamespace(hparams={"l1_per_electron": True}, conditioned=True, electrons=(1, 2, 3, 4))
    expected = (2.5 / ns * torch.tensor([0.4, 0.2, 0.1, 0.3])).mean()
    torch.testing.assert_close(l1_term(model, x, fake, y), expected)
    plain = torch.tensor([0.4, 0.2, 0.1, 0.3]).mean()
    torch.testing.assert_close(l1_term(SimpleNamespace(**{**vars(model), "hparams": {}}), x, fake, y), plain)
    torch.testing.assert_close(l1_term(SimpleNamespace(**{**vars(model), "conditioned": False}), x, fake, y), plain)


# --- D and the adversarial term on every k-th batch (model.adv_every) ---------------------------------------------


def test_optimizer_steps_count_ds_steps_on_the_adversarial_batches_only():
    for k, expected in ((1, 14), (2, 11), (3, 10)):  # 7 batches: G 7 + D ⌈7/k⌉
        assert gan_step.optimizer_steps(tiny_model(f"model.adv_every={k}"), 7) == expected
    assert gan_step.optimizer_steps(tiny_model("model.adv_weight=0"), 7) == 7  # no D


@pytest.mark.parametrize("bad", ["0", "-1", "1.5", "true"])
def test_adv_every_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match=r"model\.adv_every=.*expected an integer ≥ 1"):
        tiny_model(f"model.adv_every={bad}")


class DWeights(L.Callback):
    """D's weights before every batch; with `perturb_at`, D's weights are shifted at that batch's start."""

    def __init__(self, perturb_at: int | None = None) -> None:
        self.seen: list[list[torch.Tensor]] = []
        self.perturb_at = perturb_at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.perturb_at:
            with torch.no_grad():
                for p in pl_module.discriminator.parameters():
                    p.add_(0.5)
        self.seen.append([p.detach().clone() for p in pl_module.discriminator.parameters()])


@pytest.mark.parametrize("k", [2, 3])
def test_adv_every_steps_d_on_every_kth_batch_and_trains_g_on_l1_alone_between(k):
    """Over 2k + 1 batches D moves only on batches 0, k, 2k, its Adam steps ⌈(2k + 1)/k⌉ = 3 times, the run ends
    after exactly 2k + 1 generator steps, and the losses logged on an L1-only batch are D's latest."""
    torch.manual_seed(0)
    model, seen = tiny_model(f"model.adv_every={k}"), DWeights()
    fit(model, steps=2 * k + 1, callbacks_=[seen])
    assert int(model.generator_steps) == 2 * k + 1 and len(seen.seen) == 2 * k + 1
    after = [p.detach().clone() for p in model.discriminator.parameters()]
    moved = [any(not torch.equal(a, b) for a, b in zip(seen.seen[i], [*seen.seen, after][i + 1], strict=True))
             for i in range(2 * k + 1)]
    assert moved == [i % k == 0 for i in range(2 * k + 1)]
    opt_d = model.optimizers()[1].optimizer
    assert [int(s["step"]) for s in opt_d.state.values()] == [3]
    assert bool((model.d_numbers != 0).all())  # D's numbers of batch 2k, logged on the L1-only batches after it


@pytest.mark.parametrize(("k", "depends"), [(2, False), (1, True)])
def test_g_on_an_l1_only_batch_never_reads_d(k, depends):
    """G's gradients of batch 1 are the same whatever D's weights then are, with adv_every = 2 (batch 1 is L1-only);
    with adv_every = 1 they are not (the check can fail)."""
    grads = []
    for perturb in (None, 1):
        torch.manual_seed(0)
        model = tiny_model(f"model.adv_every={k}")
        fit(model, steps=2, callbacks_=[DWeights(perturb_at=perturb)])
        grads.append([p.grad.clone() for p in model.generator.parameters()])
    same = all(torch.equal(a, b) for a, b in zip(*grads, strict=True))
    assert same is not depends


def test_host_values_follow_every_change_of_their_buffers():
    """The Python copies the step reads (no GPU sync per batch) are those of the buffers after an in-place change,
    a load_state_dict, a move and `host_add_`; a stale copy would scale every prediction wrongly."""
    model = tiny_model()
    assert fast.host_value(model, "scale") == [0.0, 1.0, 0.0, 0.05]
    model.scale.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64))
    assert fast.host_value(model, "scale") == [1.0, 2.0, 3.0, 4.0]
    for _ in range(3):
        fast.host_add_(model, "generator_steps")
    assert fast.host_value(model, "generator_steps") == int(model.generator_steps) == 3
    state = model.state_dict()
    state["generator_steps"], state["physics"] = torch.tensor(7), torch.tensor([0.5, 3.0], dtype=torch.float64)
    model.load_state_dict(state)
    assert fast.host_value(model, "generator_steps") == 7 and model.charge == (3.0, 0.5)
    model.to(torch.float32)  # a move makes new float buffers
    model.physics.mul_(2)
    assert model.charge == (6.0, 1.0)


def test_the_adversarial_term_of_an_adversarial_batch_is_weighted_k_times():
    """Batch 0 of adv_every = 2 is the reference's step with adv_weight doubled: the same gradients of G and D."""
    runs = []
    for overrides in (("model.adv_every=2",), ("model.adv_every=1", "model.adv_weight=2")):
        torch.manual_seed(0)
        model = tiny_model(*overrides)
        fit(model, steps=1)
        runs.append(model)
    for (k, p), q in zip(runs[0].named_parameters(), runs[1].parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0, msg=k)
    torch.manual_seed(0)
    plain = tiny_model("model.adv_every=1")
    fit(plain, steps=1)
    assert not all(torch.equal(p.grad, q.grad) for p, q in zip(plain.generator.parameters(),
                                                               runs[0].generator.parameters(), strict=True))

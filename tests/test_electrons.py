"""More electrons (issue 11, parts 3-4): sets of N = 1…4 of the same potentials read as one, split by potential,
each instance's N as a second input channel of one shared model, which records its N; predict/invert take N from
`n_electrons=` and refuse an N the model was not trained on; charge checks use each instance's N; a run on one
N = 2 set is the run it was before (tensors, networks, checkpoint keys, numbers); the per-N data configs, the
study and the addition-energy script."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from tiny import ROOT, TINY_PHYSICS, compose_app, compose_train, run_tiny, tiny_overrides

from physics import families
from physics.config import ConfigError, PhysicsConfig
from physics.dataset import open_dataset
from physics.generate import Plan, generate
from physics.manifest import Identity
from qdgan import datasets, metrics
from qdgan.apply import checkpoint
from qdgan.apply.inputs import InputError
from qdgan.apply.invert import run_invert
from qdgan.apply.predict import run_predict
from qdgan.datamodule import EDDataModule
from qdgan.pix2pix import Pix2Pix
from qdgan.scaling import encode_input, fit_stats, split_indices, to_unit_range
from qdgan.train.evaluate import electrons_of, evaluate
from qdgan.train.run import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = {"grid": 16, "n_basis": 8, "n_orbitals": 6, "n_wells": 5}  # ~1-10 ms per instance for N = 1…4
WIDE = {"n_basis": 10, "n_orbitals": 4}  # the 64² grid the networks take (tests/tiny.py TINY_PHYSICS)


def _make(path: Path, n: int, seed: int, **physics: object) -> Path:
    identity = Identity(PhysicsConfig(**physics), seed, n, n // 2, families.from_mapping({"family": "paper"}))
    assert generate(Plan(identity, path, range(identity.n_shards), 1, {}), progress=False)
    return path


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    """20 paper potentials (seed 0) with N = 1, 2, 3 (6 orbitals) and 4 (7 orbitals); N = 2 with 7 orbitals; N = 3
    of other potentials (seed 1). 16² grid."""
    root = tmp_path_factory.mktemp("electrons")
    out = {f"n{n}": _make(root / f"n{n}", 20, 0, **{**SMALL, "n_electrons": n}) for n in (1, 2, 3)}
    out["n4"] = _make(root / "n4", 20, 0, **{**SMALL, "n_electrons": 4, "n_orbitals": 7})
    out["n2_7"] = _make(root / "n2_7", 20, 0, **{**SMALL, "n_electrons": 2, "n_orbitals": 7})
    out["n3_seed1"] = _make(root / "n3_seed1", 20, 1, **{**SMALL, "n_electrons": 3})
    return out


@pytest.fixture(scope="module")
def wide(tmp_path_factory) -> dict[str, Path]:
    """24 paper potentials (seed 0) with N = 1 and N = 2 on the 64² grid."""
    root = tmp_path_factory.mktemp("wide")
    return {f"n{n}": _make(root / f"n{n}", 24, 0, **{**WIDE, "n_electrons": n}) for n in (1, 2)}


def _module(path, n_train=48, n_val=16, n_test=16, **physics) -> EDDataModule:
    dm = EDDataModule(path=path, input="potential", target="n_int", physics={**SMALL, **physics}, n_train=n_train,
                      n_val=n_val, n_test=n_test, batch_size=4, eval_batch_size=5, resize=16, generate=None)
    dm.prepare_data()
    dm.setup()
    return dm


def _one_line(err: pytest.ExceptionInfo, *needles: str) -> None:
    text = str(err.value)
    assert "\n" not in text, text
    for needle in needles:
        assert needle in text, text


def _train(paths: list[Path] | Path, run_dir: Path, mapping: str, n_train: int, n_val: int, n_test: int,
           *extra: str) -> Path:
    """A 2-step run of `mapping` on the wide set(s), at a constant lr (a run continued to more steps equals an
    uninterrupted one only without a schedule over max_steps); its best checkpoint."""
    value = f"[{','.join(map(str, paths))}]" if isinstance(paths, list) else str(paths)
    cfg = compose_train(tiny_overrides(Path("unused"), run_dir, f"data.path={value}", f"mapping={mapping}",
                                       f"data.n_train={n_train}", f"data.n_val={n_val}", f"data.n_test={n_test}",
                                       "data.eval_batch_size=4", "max_steps=2", "val_every_n_steps=2", "n_panels=1",
                                       "model.lr_decay_start=1.0", *extra))
    run_tiny(cfg, run_dir)
    return run_dir / "checkpoints" / "best.ckpt"


@pytest.fixture(scope="module")
def shared(wide, tmp_path_factory) -> dict[str, Path]:
    """V ↦ n_int and n_int ↦ V trained on N = 1 and 2 together (24 + 24 instances, split 32/8/8)."""
    paths = [wide["n1"], wide["n2"]]
    return {m: _train(paths, tmp_path_factory.mktemp(m), m, 32, 8, 8) for m in ("v_to_nint", "nint_to_v")}


@pytest.fixture(scope="module")
def single(wide, tmp_path_factory) -> Path:
    """V ↦ n_int trained on the N = 2 set alone (split 16/4/4)."""
    return _train(wide["n2"], tmp_path_factory.mktemp("single"), "v_to_nint", 16, 4, 4)


# --- data: several N as one set ------------------------------------------------------------------


def test_sets_of_several_n_mix_with_each_instances_n_as_a_second_input_channel(sets):
    dm = _module([str(sets[f"n{n}"]) for n in (1, 2, 3, 4)])
    assert dm.electrons == (1, 2, 3, 4) and dm.stats.n_electrons == 0  # per instance, not one N
    for split, idx in dm.splits.items():
        assert np.array_equal(dm.n_electrons[split], idx // 20 + 1), split  # set k holds rows 20k … 20k + 19
        x, _ = dm.scaled(split)
        physical, _ = dm.physical(split)
        assert x.shape == (len(idx), 2, 16, 16)
        assert torch.equal(x[:, 0], encode_input(physical, *dm.stats.input_code))
        assert torch.equal(x[:, 1], (torch.from_numpy(dm.n_electrons[split]).float() / 4).view(-1, 1, 1).expand(
            -1, 16, 16))


def test_sets_of_the_same_potentials_are_split_by_potential(sets):
    potential = open_dataset(sets["n1"]).potential[:]
    for n in (2, 3, 4):  # one seed: the same potentials row by row, whatever N and n_orbitals
        assert np.array_equal(open_dataset(sets[f"n{n}"]).potential[:], potential)
    listed = [str(sets[f"n{n}"]) for n in (1, 2, 3, 4)]
    dm = _module(listed)
    own = split_indices(20, 0, 12, 4, 4)  # the split of one set with a quarter of each number
    for split, rows in own.items():
        for k in range(4):
            assert np.array_equal(dm.splits[split][(dm.splits[split] // 20) == k] - 20 * k, rows), (split, k)
        run = OmegaConf.create({"data": {"path": listed, "split_seed": 0, "n_train": 48, "n_val": 16, "n_test": 16}})
        assert np.array_equal(datasets.split_rows(run["data"], sets["n3"], split), rows)  # predict/invert split=
    with pytest.raises(ValueError) as err:
        _module(listed, n_train=46, n_val=18)
    _one_line(err, "holds 4 sets of the same 20 potentials, split by potential", "must be multiples of 4")
    other = _module([str(sets["n1"]), str(sets["n3_seed1"])], n_train=30, n_val=5, n_test=5)  # other potentials
    assert np.array_equal(other.splits["test"], split_indices(40, 0, 30, 5, 5)["test"])  # one split of all rows


def test_sets_may_differ_in_n_and_with_n_in_n_orbitals_only(sets):
    assert datasets.MAY_DIFFER == ("potential", "physics.n_electrons", "physics.n_orbitals")
    assert _module([str(sets["n2"]), str(sets["n4"])], 24, 8, 8).electrons == (2, 4)  # 6 and 7 orbitals, N 2 and 4
    with pytest.raises(ValueError) as err:
        _module([str(sets["n2"]), str(sets["n2_7"])], 24, 8, 8)
    _one_line(err, f"{sets['n2']} and {sets['n2_7']} differ in their physics", "physics.n_orbitals: ", "6", "7",
              "may differ only in potential.*, physics.n_electrons, physics.n_orbitals (with N)")
    with pytest.raises(ValueError) as err:  # the sets agree in n_orbitals, the config does not
        _module([str(sets["n1"]), str(sets["n3"])], 24, 8, 8, n_orbitals=5)
    _one_line(err, f"data.path[0]={sets['n1']}: data set was generated with a different physics config",
              "physics.n_orbitals: data set 6, config 5")
    with pytest.raises(ValueError) as err:  # a single set's N is checked as before
        _module(str(sets["n3"]), 12, 4, 4)
    _one_line(err, "physics.n_electrons: data set 3, config 2")
    with pytest.raises(ConfigError) as err:  # N beyond the orbitals: one line with both values
        _module(str(sets["n1"]), 12, 4, 4, n_electrons=13)
    _one_line(err, "n_electrons=13 exceeds the number of spin-orbitals 2·n_orbitals=12")


# --- one N = 2 set: the run it was ---------------------------------------------------------------


def _small_model(seed: int = 0) -> Pix2Pix:
    torch.manual_seed(seed)
    g = {"_target_": "qdgan.networks.UNetGenerator", "in_channels": 1, "ngf": 4, "depth": 4,
         "channel_mults": [1, 2, 4, 4], "n_dropout": 1, "image_size": 16}
    d = {"_target_": "qdgan.networks.PatchDiscriminator", "in_channels": 2, "ndf": 4, "n_strided": 1, "n_plain": 2,
         "image_size": 16}
    return Pix2Pix(g, d, mapping="v_to_nint", input_name="potential", target_name="n_int")


def test_a_single_n2_set_gives_the_tensors_networks_and_numbers_it_gave_before(sets):
    dm = _module(str(sets["n2"]), 12, 4, 4)
    ds = open_dataset(sets["n2"])  # what setup did before: one set, its own split, N from the config
    splits = split_indices(20, 0, 12, 4, 4)
    inputs, targets = (torch.from_numpy(np.ascontiguousarray(ds[q][:], dtype=np.float32))
                       for q in ("potential", "n_int"))
    train = torch.from_numpy(splits["train"])
    stats = fit_stats(inputs[train], targets[train], 0.0, dm.physics.h_nm**2, 2)
    assert dm.electrons == (2,) and torch.equal(dm.stats.target_mean, stats.target_mean)
    assert dataclasses.replace(dm.stats, target_mean=None) == dataclasses.replace(stats, target_mean=None)
    for split, idx in splits.items():
        x, y = inputs[torch.from_numpy(idx)], targets[torch.from_numpy(idx)]
        scaled = (encode_input(x, *stats.input_code).unsqueeze(1), to_unit_range(y, stats.target_min,
                                                                                 stats.target_max).unsqueeze(1))
        assert all(torch.equal(a, b) for a, b in zip(dm.scaled(split), scaled, strict=True))
    before, model = _small_model(), _small_model()
    model._trainer = SimpleNamespace(datamodule=dm)  # Pix2Pix.setup as trainer.fit calls it
    model.setup("fit")
    assert not model.conditioned and model.hparams.electrons is None and model.electrons == (2,)
    assert model.generator.down[0][0].in_channels == 1 and model.discriminator.model[0][0].in_channels == 2
    assert list(model.state_dict()) == list(before.state_dict())  # same keys, same networks, same initial weights
    assert all(torch.equal(v, before.state_dict()[k]) for k, v in model.state_dict().items()
               if k.startswith(("generator.", "discriminator.")))
    x, y = dm.physical("test")
    model.eval()
    with torch.no_grad():
        by_hand = model.unscale_target(model(model.scale_input(x).unsqueeze(1))).squeeze(1)
    assert torch.equal(model.predict_maps(x), by_hand) and model.charge_of(dm.scaled("test")[0]) == model.charge
    n_el = electrons_of(model, x, y)
    assert isinstance(n_el, float) and n_el == model.charge[0] == 2.0  # the very number test metrics used
    result, pred = evaluate(model, x, y)
    assert torch.equal(torch.tensor(result["per_sample"]["charge_error"]),
                       metrics.charge_error(pred, 2.0, model.charge[1]).double()) and "per_n" not in result


def test_a_run_on_one_n2_set_keeps_its_checkpoint_keys_and_one_channel(single):
    state = torch.load(single, map_location="cpu", weights_only=False)
    cfg = OmegaConf.load(single.parents[1] / "config.yaml")
    assert list(state["state_dict"]) == list(build_model(cfg).state_dict())
    assert state["state_dict"]["generator.down.0.0.weight"].shape[1] == 1
    assert state["hyper_parameters"]["electrons"] is None and state["state_dict"]["physics"][1] == 2


# --- the shared model ----------------------------------------------------------------------------


def test_the_shared_model_records_its_n_and_scores_each_instance_with_its_own_n(shared, wide):
    state = torch.load(shared["v_to_nint"], map_location="cpu", weights_only=False)
    assert state["hyper_parameters"]["electrons"] == [1, 2] and state["state_dict"]["physics"][1] == 0
    assert state["state_dict"]["generator.down.0.0.weight"].shape[1] == 2  # the map and N
    assert state["state_dict"]["discriminator.model.0.0.weight"].shape[1] == 3  # the map, N and the target
    model = checkpoint.load_model(shared["v_to_nint"])
    assert model.conditioned and model.electrons == (1, 2)
    saved = json.loads((shared["v_to_nint"].parents[1] / "metrics.json").read_text())
    assert set(saved["per_n"]) == {"1", "2"} and sum(p["n"] for p in saved["per_n"].values()) == 8
    rows = np.array(saved["indices"])
    n = torch.from_numpy(rows // 24 + 1).float()  # set 0 is N = 1
    v = np.concatenate([open_dataset(wide[f"n{k}"]).potential[:] for k in (1, 2)])[rows]
    pred = model.predict_maps(torch.from_numpy(v), 4, n)
    assert np.allclose(saved["per_sample"]["charge_error"], metrics.charge_error(pred, n, model.charge[1]).numpy(),
                       rtol=1e-5, atol=1e-6)  # |∫ñ − N_i| with each instance's N
    with pytest.raises(ValueError, match="give the inputs' N"):
        model.predict_maps(torch.from_numpy(v))
    from qdgan.study.transfer import evaluate_runs  # the study's tables: each set's test split, its own N

    cells = evaluate_runs([("shared", "", shared["v_to_nint"].parents[1])], {"N=1": wide["n1"], "N=2": wide["n2"]},
                          {"split_seed": 0, "n_train": 16, "n_val": 4, "n_test": 4})
    assert [(c.tested_on, c.n) for c in cells] == [("N=1", 4), ("N=2", 4)]
    per_n = {k: v["mean"]["charge_error"] for k, v in saved["per_n"].items()}
    assert [c.charge_error for c in cells] == pytest.approx([per_n["1"], per_n["2"]], rel=1e-5)  # the same rows


def test_a_shared_run_resumes_to_the_numbers_of_an_uninterrupted_one(shared, wide, tmp_path):
    paths, last = [wide["n1"], wide["n2"]], shared["v_to_nint"].parent / "last.ckpt"
    whole = _train(paths, tmp_path / "whole", "v_to_nint", 32, 8, 8, "max_steps=4")
    resumed = _train(paths, tmp_path / "resumed", "v_to_nint", 32, 8, 8, "max_steps=4", f"ckpt_path={last}")
    a, b = (torch.load(p.parent / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
            for p in (whole, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a) and a["generator.down.0.0.weight"].shape[1] == 2
    m = [json.loads((p.parents[1] / "metrics.json").read_text()) for p in (whole, resumed)]
    assert m[0]["r2"] == m[1]["r2"] and m[0]["per_n"] == m[1]["per_n"]


def _predict(ckpt: Path, inp: Path, out: Path, *extra: str):
    return compose_app("predict", [f"checkpoint={ckpt}", f"input={inp}", f"output={out / 'pred.npy'}",
                                   f"report={out / 'report.json'}", "panels=null", "ed.workers=1",
                                   "trust.enabled=false", *TINY_PHYSICS, *extra])


def test_predict_takes_n_from_the_user_for_the_shared_model(shared, wide, tmp_path):
    ckpt, v = shared["v_to_nint"], open_dataset(wide["n2"]).potential[:3]
    np.save(tmp_path / "v.npy", v)
    with pytest.raises(InputError) as err:
        run_predict(_predict(ckpt, tmp_path / "v.npy", tmp_path / "a"))
    _one_line(err, "n_electrons=<N> is required", "trained on N = 1, 2")
    with pytest.raises(ValueError) as err:
        run_predict(_predict(ckpt, tmp_path / "v.npy", tmp_path / "b", "n_electrons=3"))
    _one_line(err, "n_electrons=3: the model was trained on N = 1, 2 only")
    report = run_predict(_predict(ckpt, tmp_path / "v.npy", tmp_path / "c", "n_electrons=2", "trust.enabled=true"))
    expected = checkpoint.load_model(ckpt).predict_maps(torch.from_numpy(v), n_electrons=2.0).numpy()
    assert np.array_equal(np.load(tmp_path / "c" / "pred.npy"), expected)
    assert report["n_electrons"] == 2 and report["predicted_charge"]["n_electrons"] == 2.0
    assert report["predicted_charge"]["max_abs_error"] == pytest.approx(
        float(np.abs(checkpoint.charge(expected, checkpoint.trained_on(checkpoint.load_model(ckpt)).pixel_area)
                     - 2).max()))
    with pytest.raises(InputError) as err:  # a data set says its N: another one given is refused
        run_predict(_predict(ckpt, wide["n1"], tmp_path / "d", "n_electrons=2", "indices=0:2"))
    _one_line(err, f"n_electrons=2, but input={wide['n1']} is a data set of N = 1")
    assert run_predict(_predict(ckpt, wide["n1"], tmp_path / "e", "indices=0:2"))["n_electrons"] == 1


def test_invert_takes_n_and_solves_ed_with_it(shared, wide, tmp_path):
    ckpt = shared["nint_to_v"]
    np.save(tmp_path / "n.npy", open_dataset(wide["n1"]).n_int[:2])
    base = ["n_panels=0", "ed.workers=1", "trust.enabled=false", *TINY_PHYSICS]
    with pytest.raises(InputError) as err:
        run_invert(compose_app("invert", [f"checkpoint={ckpt}", f"input={tmp_path / 'n.npy'}",
                                          f"out_dir={tmp_path / 'a'}", *base]))
    _one_line(err, "n_electrons=<N> is required", "trained on N = 1, 2")
    result = run_invert(compose_app("invert", [f"checkpoint={ckpt}", f"input={tmp_path / 'n.npy'}",
                                               f"out_dir={tmp_path / 'b'}", "n_electrons=1", *base]))
    assert result["n_electrons"] == 1 and result["physics"]["n_electrons"] == 1  # ED of Ṽ with one electron
    assert not any("do not integrate to N" in w for w in result["warnings"])  # checked against N = 1


def test_a_one_n_model_refuses_inputs_of_another_n_in_one_line(single, wide, tmp_path):
    with pytest.raises(InputError) as err:
        run_predict(_predict(single, wide["n1"], tmp_path / "a", "indices=0:2"))
    _one_line(err, "the data set's physics does not match the checkpoint",
              "physics.n_electrons=1 vs the checkpoint's N = 2")
    np.save(tmp_path / "v.npy", open_dataset(wide["n2"]).potential[:2])
    with pytest.raises(ValueError) as err:
        run_predict(_predict(single, tmp_path / "v.npy", tmp_path / "b", "n_electrons=3"))
    _one_line(err, "n_electrons=3: the model was trained on N = 2 (one N)")
    assert run_predict(_predict(single, tmp_path / "v.npy", tmp_path / "c", "n_electrons=2"))["n_electrons"] == 2


# --- configs, study, addition energies ------------------------------------------------------------


def test_the_per_n_configs_make_the_documented_sets_and_electrons_lists_them():
    commands = {"paper_n1": ["physics.n_electrons=1"], "paper_n3": ["physics.n_electrons=3"],
                "paper_n4": ["physics.n_electrons=4", "physics.n_orbitals=20"]}
    for name, overrides in commands.items():
        cfg = compose_train([f"data={name}"])
        gen = compose_app("generate", [*overrides, f"out_dir=data/{name}"])
        assert PhysicsConfig.from_mapping(cfg.data.physics) == PhysicsConfig.from_mapping(gen.physics) \
            == PhysicsConfig.from_mapping(cfg.physics)
        assert cfg.data.path == gen.out_dir and cfg.data.generate.seed == gen.seed == 0
        assert (cfg.data.generate.n_samples, cfg.data.generate.shard_size) == (gen.n_samples, gen.shard_size)
    cfg = compose_train(["data=electrons"])
    d = cfg.data
    assert list(d.path) == ["data/paper_n1", "data/paper", "data/paper_n3", "data/paper_n4"] and d.generate is None
    assert d.n_train + d.n_val + d.n_test == 4 * 5000 and d.n_train % 4 == d.n_val % 4 == d.n_test % 4 == 0
    assert compose_train([]).model == cfg.model and "electrons" not in compose_train([]).model  # no new keys


def test_the_electrons_study_plans_per_n_and_shared_runs_with_per_n_tables():
    from qdgan.study.plan import plan_study

    study = plan_study("electrons", [])
    assert {(j.x, j.series) for j in study.jobs} == {(d, f"mapping={m}") for m in ("v_to_nint", "nint_to_v")
                                                   for d in ("paper_n1", "paper", "paper_n3", "paper_n4", "electrons")}
    assert list(study.transfer["sets"].values()) == list(compose_train(["data=electrons"]).data.path)
    data = compose_train(["data=electrons"]).data
    per_set = {k: data[k] // 4 for k in ("n_train", "n_val", "n_test")}
    assert {k: study.transfer["split"][k] for k in per_set} == per_set  # each set's test split: the shared model's


def _addition():
    spec = importlib.util.spec_from_file_location("addition_energies", ROOT / "benchmarks" / "addition_energies.py")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_addition_energies_of_sets_of_the_same_potentials(sets, tmp_path):
    add = _addition()
    loaded = add.load([sets["n3"], sets["n1"], sets["n4"], sets["n2"]])  # ordered by N
    assert loaded.electrons == [1, 2, 3, 4]
    energy = np.stack([open_dataset(sets[f"n{n}"]).energy[:] for n in (1, 2, 3, 4)])
    assert np.array_equal(add.addition_energies(loaded.energy), energy[1:] - energy[:-1])
    written = add.report(loaded, tmp_path, folds=4)
    assert [p.name for p in written] == ["addition_energies.csv", "addition_energies.md", "addition_energies.png"]
    assert "E(4) − E(3)" in (tmp_path / "addition_energies.md").read_text() and all(p.exists() for p in written)
    with pytest.raises(ValueError) as err:  # other potentials
        add.load([sets["n2"], sets["n3_seed1"]])
    _one_line(err, f"{sets['n3_seed1']} and {sets['n2']} differ in", "potential(s), first row", "seeds 1 and 0")
    with pytest.raises(ValueError) as err:
        add.load([sets["n1"], sets["n3"]])
    _one_line(err, "hold N = [1, 3]; expected consecutive N")
    assert add.main(["--sets", str(sets["n1"]), str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 1


def test_shared_own_mean_scores_against_the_per_n_models_training_mean(shared, single, wide):
    spec = importlib.util.spec_from_file_location("shared_own_mean", ROOT / "benchmarks" / "shared_own_mean.py")
    own = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(own)
    split = {"split_seed": 0, "n_train": 16, "n_val": 4, "n_test": 4}  # each set's share of the shared run's split
    per_n_model = Pix2Pix.load_from_checkpoint(single, map_location="cpu")  # trained on the N = 2 set alone
    assert torch.equal(torch.from_numpy(own.training_mean(str(wide["n2"]), split)), per_n_model.target_mean.cpu())
    run_dir = shared["v_to_nint"].parents[1]
    scores = own.score(run_dir, {1: str(wide["n1"]), 2: str(wide["n2"])}, split)
    per_n = json.loads((run_dir / "metrics.json").read_text())["per_n"]
    for n in ("1", "2"):
        assert scores[n]["r2_study"] == pytest.approx(per_n[n]["r2"], abs=1e-6)  # the run's own per-N test scores
    model = Pix2Pix.load_from_checkpoint(shared["v_to_nint"], map_location="cpu")
    ds, test = open_dataset(wide["n2"]), torch.from_numpy(split_indices(24, 0, 16, 4, 4)["test"])
    x, y = (torch.from_numpy(np.asarray(ds[q][:], dtype=np.float32)) for q in ("potential", "n_int"))
    _, pred = evaluate(model, x[test], y[test])
    expected = float(metrics.r2_score(pred, y[test], per_n_model.target_mean.cpu()))
    assert scores["2"]["r2_own_mean"] == pytest.approx(expected, abs=1e-6)
    assert scores["2"]["r2_own_mean"] != pytest.approx(scores["2"]["r2_study"], abs=1e-9)  # another β̄, another R²

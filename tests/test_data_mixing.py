"""`data.path` as a list of data sets (qdgan/datasets.py): sets of different potential families mix into one
training set with one split over the concatenation; sets of other physics, missing sets and repeated sets are
refused in one line; a single path reads exactly as before; the apply apps find a list run's split."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from tiny import compose_train

from physics import families
from physics.config import PhysicsConfig
from physics.dataset import open_dataset
from physics.generate import Plan, generate
from physics.manifest import Identity
from qdgan import datasets
from qdgan.datamodule import EDDataModule
from qdgan.scaling import encode_input, fit_stats, split_indices, to_unit_range
from qdgan.train.rundir import Settings

TINY = {"grid": 16, "n_basis": 8, "n_orbitals": 6, "n_wells": 5}  # ~1 ms per instance


def _make(path: Path, n: int, seed: int, family: str = "paper", **physics: object) -> Path:
    identity = Identity(PhysicsConfig(**{**TINY, **physics}), seed, n, 10, families.from_mapping({"family": family}))
    assert generate(Plan(identity, path, range(identity.n_shards), 1, {}), progress=False)
    return path


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sets")
    return {"paper": _make(root / "paper", 20, 0), "gates": _make(root / "gates", 20, 1, "gates"),
            "eps": _make(root / "eps", 10, 2, eps_r=10.0)}


def _module(path, n_train=30, n_val=5, n_test=5, **physics) -> EDDataModule:
    dm = EDDataModule(path=path, input="potential", target="n_int", physics={**TINY, **physics}, n_train=n_train,
                      n_val=n_val, n_test=n_test, batch_size=4, eval_batch_size=5, resize=16, generate=None)
    dm.prepare_data()
    dm.setup()
    return dm


def _one_line(err: pytest.ExceptionInfo, *needles: str) -> None:
    text = str(err.value)
    assert "\n" not in text, text
    for needle in needles:
        assert needle in text, text


def test_two_families_mix_in_list_order_and_the_split_covers_both(sets):
    dm = _module([str(sets["paper"]), str(sets["gates"])])
    every = np.sort(np.concatenate(list(dm.splits.values())))
    assert np.array_equal(every, np.arange(40))  # 30 + 5 + 5 of the 20 + 20 instances
    paper, gates = families.FAMILIES.index("paper"), families.FAMILIES.index("gates")
    for split, idx in dm.splits.items():
        assert np.array_equal(dm.family[split], np.where(idx < 20, paper, gates)), split
    assert {paper, gates} <= set(dm.family["train"].tolist())
    # row 20 + i of the concatenation is instance i of the second set
    x, y = dm.physical("train")
    rows = dm.splits["train"]
    gates_ds = open_dataset(sets["gates"])
    first = int(np.flatnonzero(rows >= 20)[0])
    assert torch.equal(x[first], torch.from_numpy(gates_ds.potential[int(rows[first]) - 20]))
    assert torch.equal(y[first], torch.from_numpy(gates_ds.n_int[int(rows[first]) - 20]))


def test_a_single_path_gives_the_tensors_it_gave_before_lists(sets):
    dm = _module(str(sets["paper"]), n_train=10)
    ds = open_dataset(sets["paper"])  # what setup did before lists: one set, its own split
    splits = split_indices(len(ds), 0, 10, 5, 5)
    inputs = torch.from_numpy(np.ascontiguousarray(ds["potential"][:], dtype=np.float32))
    targets = torch.from_numpy(np.ascontiguousarray(ds["n_int"][:], dtype=np.float32))
    train = torch.from_numpy(splits["train"])
    stats = fit_stats(inputs[train], targets[train], 0.0, dm.physics.h_nm**2, 2)
    assert dm.stats.input_code == stats.input_code and torch.equal(dm.stats.target_mean, stats.target_mean)
    for split, idx in splits.items():
        assert np.array_equal(dm.splits[split], idx)
        x, y = inputs[torch.from_numpy(idx)], targets[torch.from_numpy(idx)]
        assert all(torch.equal(a, b) for a, b in zip(dm.physical(split), (x, y), strict=True))
        scaled = (encode_input(x, *stats.input_code).unsqueeze(1),
                  to_unit_range(y, stats.target_min, stats.target_max).unsqueeze(1))
        assert all(torch.equal(a, b) for a, b in zip(dm.scaled(split), scaled, strict=True))
    listed = _module([str(sets["paper"])], n_train=10)  # a list of one set: the same
    assert all(torch.equal(a, b) for a, b in zip(listed.scaled("train"), dm.scaled("train"), strict=True))
    assert str(dm.path) == str(sets["paper"]) and not dm.listed


def test_sets_of_other_physics_are_refused_naming_the_sets_and_fields(sets):
    with pytest.raises(ValueError) as err:
        _module([str(sets["paper"]), str(sets["eps"])], n_train=20)
    _one_line(err, f"data.path: {sets['paper']} and {sets['eps']} differ", "physics.eps_r: ", "12.9", "10.0",
              "may differ only in potential.*")
    assert datasets.MAY_DIFFER[0] == "potential"  # and N (tests/test_electrons.py)
    paper, gates = open_dataset(sets["paper"]), open_dataset(sets["gates"])
    assert datasets.differences(paper, gates) == []  # they differ in potential.* only
    with pytest.raises(ValueError) as err:  # both sets agree, the config does not
        _module([str(sets["paper"]), str(sets["gates"])], n_orbitals=5)
    _one_line(err, f"data.path[0]={sets['paper']}: data set was generated with a different physics config",
              "physics.n_orbitals: data set 6, config 5")


def test_a_missing_or_repeated_set_is_refused_in_one_line(sets, tmp_path):
    missing = tmp_path / "double_dot"
    with pytest.raises(FileNotFoundError) as err:
        _module([str(sets["paper"]), str(missing)])
    _one_line(err, f"data.path[1]={missing}: no complete data set there", "generate each set first",
              f"python -m physics.generate potential=<family> seed=<its own seed> out_dir={missing} "
              "physics.grid=16 physics.n_basis=8")
    assert not missing.exists()
    with pytest.raises(ValueError) as err:
        _module([str(sets["paper"]), str(sets["gates"]), str(sets["paper"])])
    _one_line(err, f"data.path[2]={sets['paper']} repeats data.path[0]")
    with pytest.raises(ValueError) as err:
        _module([])
    _one_line(err, "data.path=[]: expected a data-set folder or a non-empty list")
    with pytest.raises(ValueError) as err:
        _module([str(sets["paper"]), str(sets["gates"])], n_train=40)
    _one_line(err, f"data.path={[str(sets['paper']), str(sets['gates'])]}: holds 40 instances, but the split needs")


def test_the_apply_apps_read_a_list_runs_split_of_one_set(sets, tmp_path):
    listed = [str(sets["paper"]), str(sets["gates"])]
    run = OmegaConf.create({"data": {"path": listed, "split_seed": 0, "n_train": 30, "n_val": 5, "n_test": 5}})
    test = split_indices(40, 0, 30, 5, 5)["test"]
    rows, split = datasets.split_selection(run, sets["gates"], "test", None)
    assert split is None and rows == [r - 20 for r in test if r >= 20]
    one = OmegaConf.create({"data": {"path": listed[0], "split_seed": 0, "n_train": 10, "n_val": 5, "n_test": 5}})
    assert datasets.split_selection(one, sets["paper"], "test", None) == (None, "test")  # its own split, as before
    assert datasets.split_selection(run, sets["gates"], "test", "0:3") == ("0:3", "test")  # refused later: both given
    with pytest.raises(ValueError) as err:
        datasets.split_selection(run, sets["eps"], "val", None)
    _one_line(err, f"and {sets['eps']} is not one of them; select rows with indices=start:stop")


def test_mix_of_sets_lists_the_five_family_sets_and_fits_its_split():
    cfg = compose_train(["data=mix_of_sets"])
    d = cfg.data
    assert list(d.path) == [f"data/{f}" for f in families.FAMILIES] and d.generate is None
    assert d.n_train + d.n_val + d.n_test == 5 * 5000
    settings = Settings.of(cfg)  # a run dir of another list is another run (qdgan/train/rundir.py)
    stored = copy.deepcopy(settings.values)
    stored["data"]["path"][4] = "data/mix"
    assert settings.differences(stored) == [f"data.path: {stored['data']['path']} → {list(d.path)}"]


class _Identity(torch.nn.Module):
    """Stands in for a model in `input_stats`: its input encoding is the identity."""

    hparams = OmegaConf.create({"input_name": "potential"})
    device = torch.device("cpu")

    def scale_input(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_trust_input_distances_of_a_list_run_use_every_sets_training_rows(sets, tmp_path):
    from qdgan.apply.uncertainty import input_stats

    listed = [str(sets["paper"]), str(sets["gates"])]
    run = OmegaConf.create({"data": {"path": listed, "split_seed": 0, "n_train": 30, "n_val": 5, "n_test": 5}})
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    ckpt.parent.mkdir(parents=True)
    stats, note = input_stats(str(ckpt), _Identity(), run)
    assert stats is not None, note
    train = split_indices(40, 0, 30, 5, 5)["train"]
    both = np.concatenate([open_dataset(sets[s])["potential"][:].reshape(20, -1) for s in ("paper", "gates")])
    assert np.allclose(stats["mean"], both[train].mean(axis=0), atol=1e-5)  # all 30 training rows, both sets


def test_extra_train_sets_add_training_rows_and_keep_the_split(sets, tmp_path):
    """data.extra_train (data scale, issue 12): validation and test are the set's own split, its training rows come
    first and unchanged, then the extra set's first instances in order; too many is refused in one line."""
    alone = _module(str(sets["paper"]), n_train=10)
    extra = _make(tmp_path / "more", 20, 5)

    def module(n_train: int) -> EDDataModule:
        dm = EDDataModule(path=str(sets["paper"]), input="potential", target="n_int", physics=TINY, n_train=n_train,
                          n_val=5, n_test=5, batch_size=4, eval_batch_size=5, resize=16, extra_train=[str(extra)])
        dm.prepare_data()
        dm.setup()
        return dm

    same = module(10)  # no more than the set holds: nothing is taken from the extra set
    for split in ("train", "val", "test"):
        assert np.array_equal(same.splits[split], alone.splits[split]), split
        assert torch.equal(same.physical(split)[1], alone.physical(split)[1]), split
    dm = module(22)
    for split in ("val", "test"):
        assert np.array_equal(dm.splits[split], alone.splits[split]), split
        assert torch.equal(dm.physical(split)[0], alone.physical(split)[0]), split
    assert np.array_equal(dm.splits["train"], np.concatenate([alone.splits["train"], 20 + np.arange(12)]))
    x, y = dm.physical("train")
    more = open_dataset(extra)
    assert torch.equal(x[10:], torch.from_numpy(more.potential[:12]))
    assert torch.equal(y[:10], alone.physical("train")[1])
    assert dm.scaled("train")[0].shape == (22, 1, 16, 16)
    with pytest.raises(ValueError) as err:
        module(31)
    _one_line(err, "n_train=31", "data.extra_train")

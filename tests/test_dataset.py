"""Tests for the data-set reader `physics.dataset` and `physics.inspect`: lazy access, validation and
one clear error (file and field named) for every way a set on disk can be broken; the optional per-instance
`family` field of sets of other potential families."""

from __future__ import annotations

import json
import pickle
import shutil
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from physics import families, manifest
from physics.config import PhysicsConfig
from physics.dataset import open_dataset
from physics.files import dir_lock
from physics.generate import Plan, generate, lock_name
from physics.inspect import main as inspect_main
from physics.inspect import pick_examples
from physics.manifest import Identity
from physics.shards import FIELDS, DatasetError, read_header, shard_name, write_shard

TINY = PhysicsConfig(grid=16, n_basis=8, n_orbitals=6, n_wells=5)
N, SIZE = 30, 7  # 5 shards, the last one short


def _generate(out: Path, seed: int = 0) -> Path:
    identity = Identity(TINY, seed, N, SIZE)
    generate(Plan(identity, out, range(identity.n_shards), 2, {"test": True}), progress=False)
    return out


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _generate(tmp_path_factory.mktemp("pristine") / "set")


@pytest.fixture
def copy(pristine: Path, tmp_path: Path) -> Path:
    """A private copy of the generated set that a test may break."""
    return Path(shutil.copytree(pristine, tmp_path / "set"))


def test_views_read_what_the_shards_hold(pristine: Path) -> None:
    ds = open_dataset(pristine)
    assert len(ds) == N and ds.finalized and ds.config == TINY and ds.seed == 0
    shards = list(ds.iter_shards())
    assert [(s["start"], s["stop"]) for s in shards] == [(0, 7), (7, 14), (14, 21), (21, 28), (28, 30)]
    for name, spec in FIELDS.items():
        view = ds[name]
        whole = np.asarray(view)
        assert whole.dtype == np.dtype(spec.dtype) and whole.shape == view.shape
        assert whole.shape == ((N, 16, 16) if spec.is_map else (N,))
        assert np.array_equal(whole, np.concatenate([s[name] for s in shards]))
        assert np.array_equal(view[3], whole[3]) and np.array_equal(view[-1], whole[-1])
        assert np.array_equal(view[5:23], whole[5:23]) and np.array_equal(view[::4], whole[::4])
        picks = [29, 0, 8, 8, 13]
        assert np.array_equal(view[picks], whole[picks])
        mask = np.arange(N) % 3 == 0
        assert np.array_equal(view[mask], whole[mask])
    assert np.array_equal(ds["index"][:], np.arange(N))
    with pytest.raises(IndexError):
        ds.n0[N]
    with pytest.raises(KeyError, match="unknown field"):
        ds["density"]


def test_validate_passes_and_densities_hold_n_electrons(pristine: Path) -> None:
    ds = open_dataset(pristine)
    report = ds.validate()
    assert (report.n_instances, report.n_shards) == (N, 5)
    charge = ds.n_int[:].sum(axis=(1, 2), dtype=np.float64) * TINY.h_nm**2
    np.testing.assert_allclose(charge, TINY.n_electrons, rtol=1e-6)
    assert (ds.energy[:] > ds.energy_nonint[:]).all()  # Coulomb repulsion raises the energy


def test_a_dataset_survives_pickling(pristine: Path) -> None:
    ds = open_dataset(pristine)
    ds.n0[0]
    clone = pickle.loads(pickle.dumps(ds))
    assert np.array_equal(clone.n0[:], ds.n0[:])


def test_manifest_records_config_seed_version_and_checksums(pristine: Path) -> None:
    data = json.loads((pristine / manifest.MANIFEST).read_text())
    assert data["identity"]["physics"] == TINY.to_dict() and data["identity"]["seed"] == 0
    assert data["code_version"].startswith("qdgan") and data["generate_config"] == {"test": True}
    assert [s["count"] for s in data["shards"]] == [7, 7, 7, 7, 2]
    assert set(data["shards"][0]["sha256"]) == set(FIELDS)


def test_missing_directory_and_manifest(tmp_path: Path, copy: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(tmp_path / "nowhere")
    (copy / manifest.MANIFEST).unlink()
    with pytest.raises(DatasetError, match=r"manifest\.json is missing"):
        open_dataset(copy)


def test_missing_shard_is_named(copy: Path) -> None:
    (copy / shard_name(14, 21)).unlink()
    with pytest.raises(DatasetError, match=r"1 of 5 shard\(s\) missing: shard-000000014-000000021\.h5"):
        open_dataset(copy)


def test_extra_shards_are_named(copy: Path) -> None:
    shutil.copy(copy / shard_name(0, 7), copy / shard_name(30, 37))
    shutil.copy(copy / shard_name(0, 7), copy / "stray.h5")
    with pytest.raises(DatasetError, match=r"2 problems:\n.*shard-000000030-000000037\.h5: unexpected"
                                           r"[\s\S]*stray\.h5: unexpected"):
        open_dataset(copy)


def test_truncated_shards_are_all_named(copy: Path) -> None:
    for start, stop in ((7, 14), (28, 30)):
        path = copy / shard_name(start, stop)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DatasetError, match=r"2 problems:\n.*shard-000000007-000000014\.h5: not a readable HDF5 "
                                           r"shard[\s\S]*shard-000000028-000000030\.h5: not a readable"):
        open_dataset(copy)


def test_flipped_bit_in_the_data_is_a_checksum_mismatch(copy: Path) -> None:
    path = copy / shard_name(21, 28)
    with h5py.File(path, "r") as f:
        offset = f["n_int"].id.get_offset() + 101
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))
    ds = open_dataset(copy)  # headers are intact: only the full pass can see it
    with pytest.raises(DatasetError, match=r"000000028\.h5: checksum mismatch in field 'n_int'"):
        ds.validate()


def test_edited_values_are_caught_by_checksum_finiteness_and_charge(copy: Path) -> None:
    with h5py.File(copy / shard_name(0, 7), "r+") as f:
        f["n0"][2, 3, 3] = np.nan
        f["n_int"][4] *= 1.01
    with pytest.raises(DatasetError) as err:
        open_dataset(copy).validate()
    message = str(err.value)
    assert "checksum mismatch in field 'n0'" in message and "checksum mismatch in field 'n_int'" in message
    assert "field 'n0' has non-finite values, first at instance 2" in message
    assert "field 'n_int' integrates to 2.02 at instance 4" in message


def test_a_shard_from_another_config_is_mixed_configs(copy: Path, tmp_path: Path) -> None:
    other = _generate(tmp_path / "other", seed=1)
    shutil.copy(other / shard_name(7, 14), copy / shard_name(7, 14))
    with pytest.raises(DatasetError, match=r"shard-000000007-000000014\.h5: mixed configs.*seed: manifest 0, "
                                           r"shard 1"):
        open_dataset(copy)


def test_shard_replaced_after_finalize_is_a_manifest_checksum_mismatch(copy: Path) -> None:
    path = copy / shard_name(28, 30)
    header = read_header(path)
    ds = open_dataset(copy)
    arrays = {name: ds[name][28:30] for name in FIELDS}
    arrays["energy"] = arrays["energy"] + 1e-3  # self-consistent shard, but not the one finalized
    path.unlink()
    write_shard(copy, 28, 30, arrays, {"identity": manifest.canonical_json(header.identity),
                                      "code_version": header.code_version})
    with pytest.raises(DatasetError, match=r"shard-000000028-000000030\.h5: checksum mismatch with "
                                           r"manifest\.json in \['sha256'\] \(field\(s\) \['energy'\]\)"):
        open_dataset(copy)


def test_lock_files_of_generate_jobs_do_not_upset_the_reader(copy: Path) -> None:
    with dir_lock(copy, name=lock_name(range(5)), what="test"), warnings.catch_warnings():
        warnings.simplefilter("error")  # no "ignoring temporary file" or other warning either
        assert (copy / ".lock-shards-0-4").exists()
        assert open_dataset(copy).validate().n_shards == 5
    (copy / manifest.MANIFEST_LOCK).write_text('{"pid": 1}')  # left by a killed finalizer
    assert open_dataset(copy).validate().n_instances == N


def test_unfinalized_complete_set_opens_and_can_be_finalized(copy: Path) -> None:
    data = json.loads((copy / manifest.MANIFEST).read_text())
    table, data["shards"] = data["shards"], None
    (copy / manifest.MANIFEST).write_text(json.dumps(data))
    ds = open_dataset(copy)
    assert not ds.finalized
    ds.validate()
    assert manifest.finalize(copy)["shards"] == table
    assert open_dataset(copy).finalized


def test_inspect_prints_a_summary_and_writes_figures(pristine: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert inspect_main([str(pristine), "--out", str(tmp_path / "fig"), "--examples", "2"]) == 0
    out = capsys.readouterr().out
    assert f"instances    {N} in 5 shards of {SIZE}, seed 0, manifest finalized" in out
    assert "E_int" in out and "validation   ok" in out
    for name in ("averages.png", "examples.png"):
        assert (tmp_path / "fig" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_inspect_reports_errors_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert inspect_main([str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("physics.inspect: error:") and err.count("\n") == 1


# --- per-instance potential family: the optional `family` field ------------------------------------------

MIX = families.from_mapping({"family": "mix", "weights": {"gates": 1, "parabolic": 1, "double_dot": 1,
                                                          "disordered": 1}})
N_MIX, SIZE_MIX = 16, 6


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mixture set of four smooth families (no paper instances) on the tiny grid."""
    identity = Identity(TINY, 0, N_MIX, SIZE_MIX, MIX)
    out = tmp_path_factory.mktemp("mixed") / "set"
    generate(Plan(identity, out, range(identity.n_shards), 1, {"test": True}), progress=False)
    return out


def test_paper_sets_have_no_family_field_and_read_as_all_paper(pristine: Path) -> None:
    for name in (shard_name(0, 7), shard_name(28, 30)):
        with h5py.File(pristine / name, "r") as f:
            assert sorted(f.keys()) == sorted(FIELDS) and "family_counts" not in f.attrs
    data = json.loads((pristine / manifest.MANIFEST).read_text())
    assert "families" not in data and "potential" not in data["identity"] and set(data["fields"]) == set(FIELDS)
    assert "family_counts" not in data["shards"][0]
    ds = open_dataset(pristine)
    assert ds.potential_spec == families.PAPER and ds.family_names[0] == "paper"
    assert ds.family.dtype == np.uint8 and np.array_equal(ds.family, np.zeros(N, np.uint8))
    assert np.array_equal(ds["family"][[3, 29]], [0, 0]) and ds.family_counts == {"paper": N}
    assert all(np.array_equal(s["family"], np.zeros(s["stop"] - s["start"])) for s in ds.iter_shards(["family"]))


def test_a_mixed_set_records_each_instances_family_and_the_counts(mixed: Path) -> None:
    ds = open_dataset(mixed)
    ds.validate()
    data = ds.manifest
    assert data["families"]["names"] == list(families.FAMILIES) and ds.family_names == families.FAMILIES
    assert data["identity"]["potential"] == families.to_dict(MIX) and set(data["fields"]) == {*FIELDS, "family"}
    codes = ds.family
    assert codes.shape == (N_MIX,) and set(codes) <= {1, 2, 3, 4} and len(set(codes)) >= 3
    counts = ds.family_counts
    assert sum(counts.values()) == N_MIX and {k: v for k, v in data["families"]["counts"].items() if v} == counts
    assert sum(e["family_counts"].get("gates", 0) for e in data["shards"]) == counts.get("gates", 0)
    for k in (0, 7, 15):  # the stored family is the one instance k's own generator draws
        v, family = families.random_potential_of(np.random.default_rng(int(ds.instance_seeds[k])), TINY, MIX)
        assert families.FAMILIES[codes[k]] == family and np.array_equal(ds.potential[k], v.astype(np.float32))


def test_a_wrong_family_code_is_caught_by_checksum_and_by_value(mixed: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(mixed, tmp_path / "set"))
    with h5py.File(copy / shard_name(6, 12), "r+") as f:
        f["family"][2] = 0  # 'paper', which this mixture never draws
    with pytest.raises(DatasetError) as err:
        open_dataset(copy).validate()
    message = str(err.value)
    assert "checksum mismatch in field 'family'" in message
    assert "field 'family' has code 0 at instance 8, expected one of [1, 2, 3, 4]" in message


def test_the_family_field_is_required_where_the_identity_asks_for_it(mixed: Path, pristine: Path,
                                                                     tmp_path: Path) -> None:
    copy = Path(shutil.copytree(mixed, tmp_path / "mixed"))
    with h5py.File(copy / shard_name(0, 6), "r+") as f:
        del f["family"]
    with pytest.raises(DatasetError, match=r"shard-000000000-000000006\.h5: shard lacks field 'family', expected in "
                                           r"a set of potential family 'mix'"):
        open_dataset(copy)
    paper = Path(shutil.copytree(pristine, tmp_path / "paper"))
    with h5py.File(paper / shard_name(7, 14), "r+") as f:
        f.create_dataset("family", data=np.zeros(7, np.uint8))
    with pytest.raises(DatasetError, match=r"shard-000000007-000000014\.h5: shard has field 'family', but a set of "
                                           r"potential family 'paper' has none"):
        open_dataset(paper)
    with h5py.File(copy / shard_name(6, 12), "r+") as f:  # required fields stay required
        del f["energy"]
    with pytest.raises(DatasetError, match=r"shard-000000006-000000012\.h5: shard lacks field\(s\) \['energy'\]"):
        open_dataset(copy)


def test_optional_field_round_trip_through_write_and_read_header(tmp_path: Path) -> None:
    arrays = {name: np.zeros((3, 4, 4) if f.is_map else (3,), f.dtype) for name, f in FIELDS.items()}
    plain = read_header(write_shard(tmp_path, 0, 3, arrays, {"identity": "{}", "code_version": "test"}))
    assert set(plain.shapes) == set(FIELDS) and plain.family_counts is None
    arrays["family"] = np.array([1, 2, 2])
    path = write_shard(tmp_path, 3, 6, arrays, {"identity": "{}", "code_version": "test",
                                                "family_counts": '{"gates": 1, "parabolic": 2}'})
    header = read_header(path)
    assert header.shapes["family"] == (3,) and header.dtypes["family"] == "uint8" and "family" in header.sha256
    assert header.family_counts == {"gates": 1, "parabolic": 2} and manifest.rehash(header) == []
    with h5py.File(path, "r") as f:
        assert f["family"][...].tolist() == [1, 2, 2]


def test_inspect_shows_one_example_per_family_and_the_counts(mixed: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert inspect_main([str(mixed), "--out", str(tmp_path / "fig")]) == 0
    out = capsys.readouterr().out
    counts = open_dataset(mixed).family_counts
    assert "families     " + ", ".join(f"{k} {v}" for k, v in counts.items()) in out
    assert "potential    family=mix weights={'paper': 0.0, 'gates': 1.0" in out
    picks = pick_examples(open_dataset(mixed), 4, 0)
    assert sorted(open_dataset(mixed).family[picks]) == sorted({families.FAMILIES.index(k) for k in counts})
    assert (tmp_path / "fig" / "examples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

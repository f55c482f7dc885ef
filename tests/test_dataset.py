"""Tests for the data-set reader `physics.dataset` and `physics.inspect`: lazy access, validation and
one clear error (file and field named) for every way a set on disk can be broken."""

from __future__ import annotations

import json
import pickle
import shutil
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from physics import manifest
from physics.config import PhysicsConfig
from physics.dataset import open_dataset
from physics.files import dir_lock
from physics.generate import Plan, generate, lock_name
from physics.inspect import main as inspect_main
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

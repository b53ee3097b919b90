"""Safe files: atomic writes survive interruption, tensors + JSON round trip, corrupt files are refused."""
import json
import os

import pytest
import torch

from slicegan_core import storage
from slicegan_core.storage import (atomic_write_bytes, atomic_write_text, load_tensors, optimizer_from_flat,
                                   optimizer_to_flat, save_tensors)


def test_atomic_write_replaces_content_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "sub" / "file.bin"
    atomic_write_bytes(target, b"first")
    atomic_write_text(target, "second \u00b5m")
    assert target.read_text(encoding="utf-8") == "second \u00b5m"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask      # not mkstemp's private 0600


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_interrupted_write_keeps_the_old_file_intact(tmp_path, monkeypatch, failing):
    target = tmp_path / "checkpoint.safetensors"
    atomic_write_bytes(target, b"old checkpoint")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-write")   # a BaseException, as a signal would raise
    monkeypatch.setattr(storage.os, failing, interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(target, b"new checkpoint that never lands")
    monkeypatch.undo()
    assert target.read_bytes() == b"old checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.safetensors"]


def test_tensors_and_meta_round_trip_exactly(tmp_path):
    tensors = {"weight": torch.randn((3, 4), generator=torch.Generator().manual_seed(0)),
               "half": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3),
               "rng": torch.Generator().manual_seed(5).get_state(),          # uint8
               "step": torch.tensor(7, dtype=torch.int64),
               "transposed": torch.arange(12.0).reshape(3, 4).t()}         # not contiguous
    meta = {"step": 7, "config": {"widths": [1, 2], "name": "tiny"}, "rng_numpy": {"state": 2 ** 100}}
    save_tensors(tmp_path / "a.safetensors", tensors, meta)
    loaded, loaded_meta = load_tensors(tmp_path / "a.safetensors")
    assert loaded_meta == meta
    assert set(loaded) == set(tensors)
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor), name


def test_missing_file_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_tensors(tmp_path / "nothing.safetensors")


@pytest.mark.parametrize("damage", ["truncated", "header_only", "garbage", "empty", "bad_meta_json"])
def test_corrupt_or_truncated_file_is_a_value_error(tmp_path, damage):
    path = tmp_path / "a.safetensors"
    save_tensors(path, {"w": torch.ones(100, 10)}, {"step": 1})
    data = path.read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    damaged = {"truncated": data[: len(data) // 2],
               "header_only": data[: 8 + header_len],
               "garbage": b"\x00not a safetensors file at all" * 10,
               "empty": b"",
               "bad_meta_json": data.replace(b'{\\"step\\": 1}', b'{\\"step\\": !}')}[damage]
    assert damaged != data
    path.write_bytes(damaged)
    with pytest.raises(ValueError, match="a.safetensors"):
        load_tensors(path)


def _trained_adam(seed: int):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.0, 0.9))
    data = torch.randn((8, 4), generator=torch.Generator().manual_seed(seed))
    for _ in range(3):
        optimizer.zero_grad()
        model(data).square().mean().backward()
        optimizer.step()
    return model, optimizer, data


def test_optimizer_state_round_trips_through_a_file(tmp_path):
    with torch.random.fork_rng():
        model, optimizer, data = _trained_adam(seed=1)
        twin, twin_optimizer, _ = _trained_adam(seed=2)      # same shapes, different state
    tensors, meta = optimizer_to_flat("opt", optimizer)
    assert tensors and all(name.startswith("opt.") for name in tensors)
    save_tensors(tmp_path / "opt.safetensors", tensors, {"opt": meta})
    loaded_tensors, loaded_meta = load_tensors(tmp_path / "opt.safetensors")

    twin.load_state_dict(model.state_dict())
    optimizer_from_flat("opt", twin_optimizer, loaded_tensors, loaded_meta["opt"])
    original, restored = optimizer.state_dict(), twin_optimizer.state_dict()
    assert restored["param_groups"] == json.loads(json.dumps(original["param_groups"]))
    for index, entries in original["state"].items():
        for key, value in entries.items():
            assert torch.equal(torch.as_tensor(restored["state"][index][key]), torch.as_tensor(value))
    # The next update is bit-identical: nothing of Adam's state was lost.
    for net, opt in ((model, optimizer), (twin, twin_optimizer)):
        opt.zero_grad()
        net(data).square().mean().backward()
        opt.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)

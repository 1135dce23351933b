"""aecfe.checkpoints: atomic save, weights-only reads with clear errors."""
import pytest
import torch

from aecfe.checkpoints import load_weights_only, read_checkpoint, save_atomic
from aecfe.errors import InputError


def test_round_trip_and_no_temporary_left(tmp_path):
    path = save_atomic({"format": "demo/1", "weight": torch.arange(3.0)}, tmp_path / "c.pt")
    state = read_checkpoint(path, "demo/1", "demo checkpoint")
    assert torch.equal(state["weight"], torch.arange(3.0))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_wrong_format_and_corrupt_files_name_the_file(tmp_path):
    path = save_atomic({"format": "other/1"}, tmp_path / "c.pt")
    with pytest.raises(InputError, match=r"c\.pt: not a demo checkpoint of format demo/1"):
        read_checkpoint(path, "demo/1", "demo checkpoint")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match=r"bad\.pt: cannot read the weights"):
        load_weights_only(tmp_path / "bad.pt", "weights")


class Executable:
    """An object a weights-only load must refuse (unpickling it could run code)."""


def test_refuses_arbitrary_objects(tmp_path):
    torch.save({"format": "demo/1", "payload": Executable()}, tmp_path / "evil.pt")
    with pytest.raises(InputError, match=r"evil\.pt: cannot read"):
        read_checkpoint(tmp_path / "evil.pt", "demo/1", "demo checkpoint")

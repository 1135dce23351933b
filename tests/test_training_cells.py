"""Training cells from a store (aecfe/store/training_cells.py): in memory or streamed, same batches, same training."""
import numpy as np
import pytest
import torch

from aecfe.errors import InputError
from aecfe.store.training_cells import StoreCells, load_training_cells
from extractors.autoencoder import AECFEAutoencoder, AutoencoderConfig
from extractors.trainer import AutoencoderTrainer, RoiCropDataset, TrainerConfig
from test_train_autoencoder_cli import make_store


def test_streamed_cells_give_the_batches_of_the_in_memory_ones(tmp_path):
    store_path = make_store(tmp_path / "cells.h5", n_per_domain=4)
    memory, order = load_training_cells(store_path, stream=False)
    streamed, streamed_order = load_training_cells(store_path, stream=True)
    assert isinstance(memory, RoiCropDataset) and isinstance(streamed, StoreCells) and order == streamed_order
    assert torch.equal(memory.domains, streamed.domains) and np.array_equal(memory.labels, streamed.labels)
    for a, b in zip(memory.batch([5, 0, 3]), streamed.batch([5, 0, 3])):
        assert torch.equal(a, b)
    assert streamed.features([2])[1] is None


def test_training_streamed_equals_training_in_memory(tmp_path):
    store_path = make_store(tmp_path / "cells.h5", n_per_domain=3)
    models = []
    for stream in (False, True):
        data, order = load_training_cells(store_path, stream=stream)
        torch.manual_seed(0)
        model = AECFEAutoencoder(AutoencoderConfig(bottleneck=5, image_decoder="light"))
        config = TrainerConfig(epochs=2, batch_size=3, image_from_epoch=1, progress=False, grid_every=0,
                               probe_cells=6)
        AutoencoderTrainer(model, config, n_domains=len(order)).fit(data)
        models.append(model)
    for a, b in zip(*(m.parameters() for m in models)):
        assert torch.equal(a, b)


def test_budget_decides_streaming_and_domains_can_be_left_out(tmp_path):
    store_path = make_store(tmp_path / "cells.h5", n_per_domain=3)
    assert isinstance(load_training_cells(store_path, max_memory_gb=1e-6)[0], StoreCells)
    assert isinstance(load_training_cells(store_path)[0], RoiCropDataset)
    data, order = load_training_cells(store_path, exclude_domains=["labA"], source="labA", stream=True)
    assert order == ["labB"] and len(data) == 3 and data.rows.tolist() == [3, 4, 5]  # the source falls back
    with pytest.raises(InputError, match="labC"):
        load_training_cells(store_path, exclude_domains=["labC"])
    with pytest.raises(InputError, match="no cells"):
        load_training_cells(store_path, exclude_domains=["labA", "labB"])

"""Datasets, batch plans and transforms of the DG training loop (classifiers/dg/data.py, transforms.py)."""
import numpy as np
import pytest
import torch
from PIL import Image

from aecfe.errors import InputError
from classifiers.dg.data import (BatchPlan, ImageDataset, few_shot_indices, step_loader, steps_for_epochs,
                                 synthetic_dataset)
from classifiers.dg.transforms import AUGMENTATIONS, eval_transform, train_transform


def test_dataset_encodes_labels_reads_files_and_applies_per_domain_transforms(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(image).save(paths[-1])
    data = ImageDataset(paths, ["b", "a", "b", "a"], ["x", "x", "y", "y"],
                        transform={"y": lambda x: x * 0})
    assert data.classes == ("a", "b") and data.targets.tolist() == [1, 0, 1, 0]
    x, y, d = data[0]
    assert x.shape == (3, 32, 32) and torch.allclose(x * 255, torch.from_numpy(images[0]).permute(2, 0, 1).float())
    assert (y, d) == (1, 0) and data[2][0].abs().sum() == 0
    part = data.subset([1, 2], transform=None)
    assert part.classes == data.classes and part.targets.tolist() == [0, 1] and part[1][0].abs().sum() > 0
    assert data.class_counts().tolist() == [[1, 1], [1, 1]]
    with pytest.raises(InputError, match="differ in length"):
        ImageDataset(images, ["a"], ["x"] * 4)
    with pytest.raises(InputError, match="not in the given class list"):
        ImageDataset(images, ["a", "b", "c", "a"], ["x"] * 4, classes=["a", "b"])


def test_plan_reads_every_sample_once_per_domain_epoch_and_shards_the_global_batch():
    groups = [np.arange(0, 10), np.arange(10, 13)]
    plan = BatchPlan(groups, batch_size=5, seed=3)
    first_epoch = np.concatenate([plan.step_indices(step)[0] for step in range(2)])
    assert sorted(first_epoch.tolist()) == list(range(10))
    small = np.concatenate([plan.step_indices(step)[1] for step in range(3)])  # 15 draws from 3 samples
    assert np.bincount(small - 10).tolist() == [5, 5, 5]
    shards = [BatchPlan(groups, batch_size=5, seed=3, rank=r, world_size=2) for r in range(2)]
    double = BatchPlan(groups, batch_size=10, seed=3)
    for step in range(3):
        for g in range(2):
            together = np.sort(np.concatenate([s.step_indices(step)[g] for s in shards]))
            assert np.array_equal(together, np.sort(double.step_indices(step)[g]))
    assert plan.step_items(4) == BatchPlan(groups, batch_size=5, seed=3).step_items(4)  # stateless


def test_class_balanced_plan_draws_classes_equally():
    labels = np.array([0] * 90 + [1] * 10)
    plan = BatchPlan([np.arange(100)], batch_size=200, class_labels=labels, seed=0)
    drawn = labels[np.concatenate([plan.step_indices(s)[0] for s in range(5)])]
    assert abs(drawn.mean() - 0.5) < 0.05


def test_step_loader_items_are_seeded_whatever_the_start():
    data = synthetic_dataset(4, size=16, transform=train_transform("domainbed", 16))
    plan = BatchPlan.for_dataset(data, batch_size=2, seed=1)
    full = [x for x, _, _ in step_loader(data, plan, 0, 3)]
    resumed = [x for x, _, _ in step_loader(data, plan, 2, 3)]
    assert len(full) == 3 and full[0].shape == (6, 3, 16, 16)
    assert torch.equal(full[2], resumed[0])


def test_few_shot_indices_take_at_most_k_per_class():
    labels = np.array(["a"] * 10 + ["b"] * 2 + ["c"] * 5)
    chosen = few_shot_indices(labels, 3, seed=0)
    assert sorted(np.unique(labels[chosen], return_counts=True)[1].tolist()) == [2, 3, 3]
    assert np.array_equal(chosen, few_shot_indices(labels, 3, seed=0))
    assert not np.array_equal(chosen, few_shot_indices(labels, 3, seed=1))
    within = few_shot_indices(labels, 3, seed=0, candidates=np.arange(12))
    assert set(labels[within]) == {"a", "b"}
    assert steps_for_epochs(101, 5, 2) == 42 and steps_for_epochs(3, 5, 2) == 2


@pytest.mark.parametrize("augmentation", AUGMENTATIONS)
def test_transforms_give_square_images_in_range(augmentation):
    torch.manual_seed(0)
    x = torch.rand(3, 40, 50)
    degrade = augmentation == "fewshot"
    for transform in (train_transform(augmentation, 32, degrade=degrade), eval_transform(augmentation, 32)):
        out = transform(x)
        assert out.shape == (3, 32, 32) and out.min() >= 0 and out.max() <= 1
    with pytest.raises(InputError):
        train_transform("nope")

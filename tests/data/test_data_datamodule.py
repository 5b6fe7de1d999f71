"""Streaming loaders: batches, skipped unreadable images, device-side float conversion, weights."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from _data_helpers import write_npz
from torch import nn

from semicompact.data.datamodule import SemiCompactDataModule
from semicompact.data.datasets import ImageDataset, SkippedImageWarning, collate_skip
from semicompact.data.sources import open_source
from semicompact.data.split import make_split
from semicompact.errors import DataError


@pytest.fixture
def folder_dm(make_folder, tmp_path: Path) -> SemiCompactDataModule:
    root = make_folder({"train": {"a": 12, "b": 8}, "test": {"a": 2, "b": 2}}, unlabelled=4)
    (root / "train" / "a" / "img_003.png").write_text("this is not a png")  # one broken image
    src = open_source(root)
    manifest = make_split(src, n_labelled=6, val_fraction=0.2, seed=0, val="official")
    return SemiCompactDataModule(src, manifest, image_size=16, batch_size=4, skip_log=tmp_path / "skips.tsv")


def _all_batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedImageWarning)
        return list(loader)


def test_batches_are_uint8_and_labels(folder_dm: SemiCompactDataModule) -> None:
    batches = _all_batches(folder_dm.train_dataloader())
    assert len(batches) == 3  # 12 labelled, batch 4, drop_last
    x, y = batches[0]
    assert x.dtype == torch.uint8 and x.shape[1:] == (3, 16, 16) and y.dtype == torch.int64
    _, uy = _all_batches(folder_dm.unlabelled_dataloader())[-1]
    assert (uy == -1).any()  # the folder's own unlabelled images
    assert sum(len(b[1]) for b in _all_batches(folder_dm.test_dataloader())) == 4


def test_unreadable_image_is_skipped_and_reported(folder_dm: SemiCompactDataModule) -> None:
    broken = "train/a/img_003.png"
    every = [*folder_dm.manifest.labelled, *folder_dm.manifest.unlabelled, *folder_dm.manifest.val]
    loader = folder_dm.loader_for(every)
    with pytest.warns(SkippedImageWarning, match=r"skipping unreadable image '.*img_003\.png'"):
        batches = list(loader)
    assert sum(len(b[1]) for b in batches) == len(every) - 1  # training data still produced
    assert all(b[0].shape[0] == len(b[1]) for b in batches)
    _all_batches(loader)  # a second epoch logs it again, but it is reported once
    skipped = folder_dm.skipped_images()
    assert len(skipped) == 1 and skipped[0][0] == broken and "not a recognised image format" in skipped[0][1]


def test_skip_log_works_across_worker_processes(folder_dm: SemiCompactDataModule) -> None:
    folder_dm.num_workers = 2
    every = [*folder_dm.manifest.labelled, *folder_dm.manifest.unlabelled, *folder_dm.manifest.val]
    batches = _all_batches(folder_dm.loader_for(every))
    assert sum(len(b[1]) for b in batches) == len(every) - 1
    assert [r for r, _ in folder_dm.skipped_images()] == ["train/a/img_003.png"]


def test_collate_skip_all_none() -> None:
    x, y = collate_skip([None, None], image_size=8)
    assert x.shape == (0, 3, 8, 8) and x.dtype == torch.uint8 and y.shape == (0,)


def test_on_after_batch_transfer(folder_dm: SemiCompactDataModule) -> None:
    images = torch.full((4, 3, 16, 16), 255, dtype=torch.uint8)
    images[:, :, :, :8] = 0
    labels = torch.zeros(4, dtype=torch.int64)
    x, y = folder_dm.on_after_batch_transfer((images, labels), 0)
    assert x.dtype == torch.float32 and x.max() == 1.0 and x.min() == 0.0 and y is labels
    assert torch.equal(x, images.float() / 255)  # no augmentation outside training
    combined = folder_dm.on_after_batch_transfer(
        {"labelled": (images, labels), "unlabelled": (images, labels)}, 0
    )
    assert all(v[0].dtype == torch.float32 for v in combined.values())
    folder_dm.trainer = SimpleNamespace(training=True)
    torch.manual_seed(1)
    xa, _ = folder_dm.on_after_batch_transfer((images.repeat(4, 1, 1, 1), labels.repeat(4)), 0)
    assert xa.shape == (16, 3, 16, 16) and not torch.equal(xa, images.repeat(4, 1, 1, 1).float() / 255)
    assert xa.min() >= 0 and xa.max() <= 1
    folder_dm.trainer = None


def test_small_labelled_set_keeps_last_batch(make_folder) -> None:
    root = make_folder({"train": {"a": 4, "b": 4}})
    src = open_source(root)
    dm = SemiCompactDataModule(
        src, make_split(src, n_labelled=3, val_fraction=0.0, val="official"), image_size=8, batch_size=32
    )
    batches = _all_batches(dm.train_dataloader())
    assert len(batches) == 1 and len(batches[0][1]) == 6


def test_shuffle_is_seeded(make_folder) -> None:
    root = make_folder({"train": {"a": 20, "b": 20}})
    src = open_source(root)
    m = make_split(src, n_labelled=10)

    def order(seed: int) -> list[int]:
        dm = SemiCompactDataModule(src, m, image_size=8, batch_size=4, seed=seed)
        return next(iter(dm.train_dataloader().batch_sampler))

    assert order(0) == order(0) and order(0) != order(5)


def test_class_weights(folder_dm: SemiCompactDataModule) -> None:
    folder_dm.manifest.labelled = [["x", 0]] * 6 + [["y", 1]] * 2
    w = folder_dm.class_weights()
    assert torch.allclose(w.mean(), torch.tensor(1.0)) and torch.allclose(w, torch.tensor([0.5, 1.5]))


def test_no_unlabelled_images(make_folder) -> None:
    root = make_folder({"train": {"a": 4, "b": 4}})
    src = open_source(root)
    dm = SemiCompactDataModule(src, make_split(src, n_labelled=10), image_size=8)
    with pytest.raises(
        DataError, match=r"no unlabelled images: put them in .*ds/unlabelled/ or pass --unlabelled DIR"
    ):
        dm.unlabelled_dataloader()


def test_changed_data_refused(make_folder) -> None:
    root = make_folder({"train": {"a": 4, "b": 4}})
    src = open_source(root)
    m = make_split(src)
    (root / "train" / "a" / "img_000.png").unlink()
    with pytest.raises(DataError, match="changed since the split was made"):
        SemiCompactDataModule(open_source(root), m)


def test_npz_fast_path_and_workers(tmp_path: Path) -> None:
    src = open_source(write_npz(tmp_path / "m.npz", n=(40, 8, 12), k=2))
    m = make_split(src, n_labelled=5)
    ds = ImageDataset(src, m.test, image_size=28)
    x, y = ds[0]
    raw = src.array(m.test[0][0])
    assert torch.equal(x[0], torch.from_numpy(raw)) and torch.equal(x[2], x[0]) and y == m.test[0][1]
    assert ImageDataset(src, m.test, image_size=14)[0][0].shape == (3, 14, 14)
    dm = SemiCompactDataModule(src, m, image_size=32, batch_size=8, num_workers=2)
    batches = list(dm.unlabelled_dataloader(shuffle=True))
    assert sum(len(b[1]) for b in batches) == 30 and batches[0][0].shape[1:] == (3, 32, 32)


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
        self.seen: list[torch.dtype] = []

    def training_step(self, batch, _):
        x, y = batch
        self.seen.append(x.dtype)
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_fit_with_datamodule(make_folder, tmp_path: Path) -> None:
    root = make_folder({"train": {"a": 10, "b": 10}})
    src = open_source(root)
    dm = SemiCompactDataModule(src, make_split(src, n_labelled=5), image_size=8, batch_size=4)
    model = _Tiny()
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=dm)
    assert model.seen and set(model.seen) == {torch.float32}


def test_epoch_seeded_sampler_draws_whole_permutations_when_asked_for_more() -> None:
    from semicompact.data.datamodule import EpochSeededSampler

    plain = EpochSeededSampler(10, seed=3)
    plain.set_epoch(2)
    expected = torch.randperm(10, generator=torch.Generator().manual_seed(3 * 100_003 + 2)).tolist()
    assert list(plain) == expected  # the order finished runs were trained with is unchanged
    longer = EpochSeededSampler(10, seed=3, num_samples=25)
    longer.set_epoch(2)
    order = list(longer)
    assert len(longer) == len(order) == 25 and order[:10] == expected
    assert sorted(order[10:20]) == list(range(10)) and len(set(order[20:])) == 5


@pytest.mark.parametrize("epoch_length", ["both", "labelled"])
def test_epoch_length_labelled_keeps_steps_independent_of_the_pool(make_folder, epoch_length: str) -> None:
    from semicompact.methods.consistency import LabelledUnlabelledDataModule

    root = make_folder({"train": {"a": 12, "b": 8}, "test": {"a": 2, "b": 2}}, unlabelled=40)
    src = open_source(root)
    manifest = make_split(src, n_labelled=6, val_fraction=0.2, seed=0, val="official")
    dm = LabelledUnlabelledDataModule(
        src, manifest, image_size=16, batch_size=4, mu=1, epoch_length=epoch_length
    )
    batches = [combined for combined, _, _ in dm.train_dataloader()]
    assert len(dm.pool) >= 40
    # 12 labelled images at batch 4 are 3 steps; by default the pool's length sets the epoch
    steps = 3 if epoch_length == "labelled" else len(dm.pool) // 4
    assert len(batches) == steps
    seen = {tuple(b["u"][0][i].flatten()[:64].tolist()) for b in batches for i in range(4)}
    assert len(seen) == 4 * steps  # unlabelled images are not repeated within an epoch


def test_resumable_loader_continues_a_pass_where_its_checkpoint_left_it(folder_dm) -> None:
    """The state Lightning checkpoints mid-epoch brings back the rest of the same pass, no more."""
    whole = _all_batches(folder_dm.train_dataloader())
    loader = folder_dm.train_dataloader()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedImageWarning)
        it = iter(loader)
        next(it)
        state = loader.state_dict()
        assert state == {"batches": 1}
        list(it)
    assert loader.state_dict() == {"batches": 0}  # a finished pass: the next one starts afresh
    fresh = folder_dm.train_dataloader()
    fresh.load_state_dict(state)
    rest = _all_batches(fresh)
    assert len(rest) == 2 and all(torch.equal(a[0], b[0]) for a, b in zip(rest, whole[1:], strict=True))
    assert len(_all_batches(fresh)) == 3  # the skip applies to the resumed pass only

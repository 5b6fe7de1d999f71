"""The Lightning data module: streaming loaders for each subset of a split.

Workers decode and resize to uint8; the conversion to float and the random augmentation happen
after the batch is on the device (``on_after_batch_transfer``), batched, with kornia.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import BatchSampler, DataLoader, Sampler

from semicompact.data.datasets import ImageDataset, SkipCollate, read_skip_log
from semicompact.data.sources import DataSource
from semicompact.data.split import SplitManifest
from semicompact.data.transforms import build_augmentation
from semicompact.errors import ConfigError, DataError


class EpochSeededSampler(Sampler[int]):
    """A random order that depends only on (seed, epoch).

    Lightning calls ``set_epoch`` before each epoch (also through its distributed wrapper), so a
    run resumed after an interruption sees exactly the batches an uninterrupted run would.
    """

    def __init__(self, size: int, seed: int, num_samples: int | None = None) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 0
        self.num_samples = size if num_samples is None else num_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        rounds = -(-self.num_samples // self.size)  # whole permutations, then cut to num_samples
        order = torch.cat([torch.randperm(self.size, generator=generator) for _ in range(rounds)])
        return iter(order[: self.num_samples].tolist())

    def __len__(self) -> int:
        return self.num_samples


class SkippingBatchSampler(BatchSampler):
    """A batch sampler whose next pass can start ``skip`` batches in, drawing no image for them.

    Skipping index lists, not loaded batches, keeps a resumed pass from decoding images it will not
    use and from touching any random generator. Lightning re-creates it around its distributed
    sampler under DDP (same signature as :class:`BatchSampler`), so each rank skips its own batches.
    """

    def __init__(self, sampler: Any, batch_size: int, drop_last: bool) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self.skip = 0

    def __iter__(self) -> Iterator[list[int]]:
        skip, self.skip = self.skip, 0
        for k, batch in enumerate(super().__iter__()):
            if k >= skip:
                yield batch


class ResumableLoader(DataLoader):
    """A loader that Lightning checkpoints mid-epoch (its ``state_dict`` / ``load_state_dict``).

    Without it, a run resumed from a checkpoint written in the middle of an epoch (runs budgeted in
    steps validate every few steps) starts the epoch's order again and trains on other batches than
    the run that was never interrupted. The state is the number of batches this pass has handed out;
    the epoch's order itself comes back from :class:`EpochSeededSampler` (seed, epoch).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches_out = 0

    def __iter__(self) -> Iterator[Any]:
        sampler = self.batch_sampler
        start = sampler.skip if isinstance(sampler, SkippingBatchSampler) else 0
        self.batches_out = start
        state = torch.get_rng_state() if start else None
        iterator = super().__iter__()
        if state is not None:  # this pass drew its seed before the checkpoint: do not draw it twice
            torch.set_rng_state(state)
        for batch in iterator:
            self.batches_out += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        # a finished pass is no position: the next one (next epoch or cycle) starts at its beginning
        return {"batches": 0 if self.batches_out >= len(self) else self.batches_out}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if isinstance(self.batch_sampler, SkippingBatchSampler):
            self.batch_sampler.skip = int(state.get("batches", 0))


class SemiCompactDataModule(L.LightningDataModule):
    """Loaders over the labelled, unlabelled, val and test subsets of ``manifest``."""

    def __init__(
        self,
        source: DataSource,
        manifest: SplitManifest,
        image_size: int = 64,
        batch_size: int = 32,
        num_workers: int = 0,
        unlabelled_batch_size: int | None = None,
        skip_log: str | Path | None = None,
        augment: str = "standard",
        vflip: bool = False,
        seed: int = 0,
        invariances: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if image_size < 8:
            raise ConfigError(f"--image-size is {image_size}: use at least 8 pixels")
        if batch_size < 1:
            raise ConfigError(f"--batch-size is {batch_size}: use at least 1")
        if num_workers < 0:
            raise ConfigError(f"--num-workers is {num_workers}: use 0 or more")
        manifest.check_source(source)
        self.source = source
        self.manifest = manifest
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        self.unlabelled_batch_size = int(unlabelled_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        if skip_log is None:
            # created only when an image is actually skipped
            skip_log = Path(tempfile.gettempdir()) / f"semicompact-skips-{uuid.uuid4().hex}.tsv"
        self.skip_log = Path(skip_log)
        self.augment = build_augmentation(augment, vflip=vflip, invariances=invariances)

    # ------------------------------------------------------------------------------------ helpers
    @property
    def classes(self) -> list[str]:
        return list(self.manifest.classes)

    @property
    def num_classes(self) -> int:
        return len(self.manifest.classes)

    def dataset(self, entries: Sequence[Sequence[Any]]) -> ImageDataset:
        return ImageDataset(self.source, entries, self.image_size, self.skip_log)

    def _loader(
        self,
        entries: Sequence[Sequence[Any]],
        batch_size: int,
        shuffle: bool,
        drop_last: bool,
        name: str,
        num_samples: int | None = None,
    ) -> DataLoader:
        offset = {"train": 0, "unlabelled": 1}.get(name, 2)
        common: dict[str, Any] = dict(
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=SkipCollate(self.image_size),
            pin_memory=torch.cuda.is_available(),
        )
        if not shuffle:
            return DataLoader(self.dataset(entries), batch_size=batch_size, drop_last=drop_last, **common)
        sampler = EpochSeededSampler(len(entries), self.seed * 10 + offset, num_samples)
        batches = SkippingBatchSampler(sampler, batch_size, drop_last)
        return ResumableLoader(self.dataset(entries), batch_sampler=batches, **common)

    # ------------------------------------------------------------------------------------ loaders
    def train_dataloader(self) -> DataLoader:
        """Labelled images, shuffled; the last partial batch is dropped only if there is more than one."""
        entries = self.manifest.labelled
        if not entries:
            raise DataError(
                f"the split of '{self.source.root}' has no labelled images: re-run semicompact split"
            )
        drop_last = len(entries) > self.batch_size
        return self._loader(entries, self.batch_size, shuffle=True, drop_last=drop_last, name="train")

    def unlabelled_dataloader(self, shuffle: bool = False) -> DataLoader:
        if not self.manifest.unlabelled:
            root = self.source.root if self.source.kind == "folder" else self.source.base_dir
            raise DataError(f"no unlabelled images: put them in {root}/unlabelled/ or pass --unlabelled DIR")
        entries, size = self.manifest.unlabelled, self.unlabelled_batch_size
        return self._loader(entries, size, shuffle=shuffle, drop_last=False, name="unlabelled")

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.manifest.val, self.batch_size, shuffle=False, drop_last=False, name="val")

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.manifest.test, self.batch_size, shuffle=False, drop_last=False, name="test")

    def loader_for(self, entries: Sequence[Sequence[Any]], shuffle: bool = False) -> DataLoader:
        """A loader over arbitrary ``(ref, label|None)`` entries, e.g. for prediction."""
        return self._loader(entries, self.batch_size, shuffle=shuffle, drop_last=False, name="custom")

    # ------------------------------------------------------------------------------------ device side
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """uint8 -> float [0, 1] on the device; random augmentation only while training.

        Also accepts a dict or list of ``(images, labels)`` batches (e.g. from a CombinedLoader of the
        labelled and unlabelled loaders).
        """
        if isinstance(batch, dict):
            return {k: self.on_after_batch_transfer(v, dataloader_idx) for k, v in batch.items()}
        if isinstance(batch, (list, tuple)) and batch and not isinstance(batch[0], torch.Tensor):
            return type(batch)(self.on_after_batch_transfer(b, dataloader_idx) for b in batch)
        images, labels = batch
        x = images.float().div_(255.0) if images.dtype == torch.uint8 else images
        trainer = self.trainer
        if trainer is not None and trainer.training and x.shape[0] > 0:
            x = self.augment(x)
        return x, labels

    # ------------------------------------------------------------------------------------ reports
    def skipped_images(self) -> list[tuple[str, str]]:
        """Unique (ref, reason) of the images skipped so far, from every worker process."""
        return read_skip_log(self.skip_log)

    def class_weights(self) -> torch.Tensor:
        """Inverse class frequency over the labelled set, normalised to mean 1 (absent classes: 0)."""
        counts = torch.zeros(self.num_classes, dtype=torch.float64)
        for _, label in self.manifest.labelled:
            counts[int(label)] += 1
        weights = torch.where(counts > 0, 1.0 / counts.clamp(min=1), torch.zeros_like(counts))
        weights = weights * (self.num_classes / weights.sum())
        return weights.float()

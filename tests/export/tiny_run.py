"""A tiny trained run folder without running the trainer (seconds, not a minute).

MobileNetV2 (ImageNet weights, small input) on the synthetic 32 px cells, with only its head fitted
for a few steps: the predictions are far from constant, which is what the export and quantization
checks need. Shared by tests/export and tests/compress/test_quant*.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


def build_tiny_run(cells_dir: Path, out: Path, steps: int = 100) -> Path:
    from semicompact.artifacts import ModelCard, save_model
    from semicompact.data import make_split, open_source
    from semicompact.io import write_json
    from semicompact.models import create_model
    from semicompact.training import TrainConfig
    from semicompact.training.run import load_run_data

    torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    config = TrainConfig(
        data=str(cells_dir),
        out=str(out),
        model="mobilenetv2_100",
        pretrained=True,
        small_input=True,
        image_size=32,
        batch_size=32,
        seed=0,
    )
    write_json(out / "config.json", config.to_dict())
    source = open_source(cells_dir)
    make_split(source, n_labelled=30, seed=0).save(out / "split.json")
    model = create_model(
        "mobilenetv2_100", num_classes=len(source.classes), pretrained=True, small_input=True
    )
    dm = load_run_data(out)
    batches = list(dm.loader_for(dm.manifest.labelled))
    x = torch.cat([b[0] for b in batches]).float() / 255
    y = torch.cat([b[1] for b in batches])
    model.eval()
    with torch.no_grad():
        feats = model.net.forward_head(model.net.forward_features(model.normalize(x)), pre_logits=True)
    opt = torch.optim.Adam(model.head.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model.head(feats), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    card = ModelCard(
        model="mobilenetv2_100",
        classes=list(source.classes),
        image_size=32,
        small_input=True,
        mean=tuple(model.mean.flatten().tolist()),
        std=tuple(model.std.flatten().tolist()),
    )
    save_model(out / "best.safetensors", model.eval(), card)
    (out / "metrics.json").write_text(json.dumps({"train_time_per_epoch_s": 12.5}))
    return out

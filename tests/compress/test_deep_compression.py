"""Deep Compression: Huffman coder, weight sharing, the one-file format and its decoder."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from _fixtures import cells_datamodule, logits, make_ctx, tiny_model

from semicompact.compress import get_compressor, huffman
from semicompact.compress.deep_compression import (
    SharedWeight,
    gaps_to_symbols,
    kmeans_1d,
    load_deep_compressed,
    symbols_to_positions,
)
from semicompact.errors import ConfigError, ModelError

# --------------------------------------------------------------------------------------- Huffman


@pytest.mark.parametrize(
    ("n", "alphabet", "dist"),
    [
        (0, 4, "uniform"),
        (1, 5, "uniform"),
        (100, 1, "uniform"),
        (37, 2, "uniform"),
        (5000, 256, "uniform"),
        (20000, 256, "geometric"),
        (3000, 32, "one"),
    ],
)
def test_huffman_round_trips_random_streams(n: int, alphabet: int, dist: str) -> None:
    rng = np.random.default_rng(n)
    if dist == "uniform":
        symbols = rng.integers(0, alphabet, size=n)
    elif dist == "geometric":
        symbols = np.minimum(rng.geometric(0.3, size=n) - 1, alphabet - 1)
    else:
        symbols = np.full(n, alphabet - 1)
    buf = huffman.pack(symbols, alphabet)
    decoded, end = huffman.unpack(b"xx" + buf + b"tail", offset=2)
    assert end == 2 + len(buf)
    np.testing.assert_array_equal(decoded, symbols)


def test_huffman_beats_fixed_length_on_skewed_data_and_is_near_entropy() -> None:
    rng = np.random.default_rng(0)
    symbols = np.minimum(rng.geometric(0.25, size=50_000) - 1, 255)
    lengths, data, n_bits = huffman.encode(symbols, 256)
    fixed = huffman.fixed_length_bytes(len(symbols), 256)  # 8 bits per symbol
    assert len(data) < 0.5 * fixed
    p = np.bincount(symbols) / len(symbols)
    entropy = -(p[p > 0] * np.log2(p[p > 0])).sum()
    assert entropy <= n_bits / len(symbols) < entropy + 1  # Huffman's optimality bound
    # canonical: a prefix code, so the Kraft sum is at most 1
    used = lengths[lengths > 0].astype(float)
    assert (2.0**-used).sum() <= 1.0


def test_huffman_limits_code_length_and_rejects_bad_streams() -> None:
    fib = [1, 1]
    while len(fib) < 30:
        fib.append(fib[-1] + fib[-2])
    assert huffman.code_lengths(np.array(fib)).max() <= huffman.MAX_CODE_LENGTH
    buf = huffman.pack(np.arange(300) % 7, 8)
    with pytest.raises(ValueError, match="truncated"):
        huffman.unpack(buf[:-3])
    with pytest.raises(ValueError):
        huffman.decode(np.array([1, 1, 1]), b"\x00", 1, 1)  # violates Kraft


def test_relative_positions_round_trip_with_fillers() -> None:
    positions = np.array([0, 1, 5, 40, 41, 300, 1000])
    symbols = gaps_to_symbols(positions, pos_bits=3)  # max gap 7: long gaps need fillers (symbol 0)
    assert symbols.max() < 8 and (symbols == 0).sum() == (35 - 1) // 7 + (259 - 1) // 7 + (700 - 1) // 7
    np.testing.assert_array_equal(symbols_to_positions(symbols, 3), positions)


# ------------------------------------------------------------------------------- weight sharing


def test_kmeans_1d_finds_clusters() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(c, 0.01, 500) for c in (-1.0, 0.2, 2.0)])
    centroids, index = kmeans_1d(values, 3)
    np.testing.assert_allclose(np.sort(centroids), [-1.0, 0.2, 2.0], atol=0.01)
    assert np.abs(centroids[index] - values).max() < 0.06


def test_centroid_gradient_is_sum_of_shared_weight_gradients() -> None:
    mask = torch.tensor([[1, 0, 1], [1, 1, 0]], dtype=torch.bool)
    index = np.array([0, 1, 0, 1])
    shared = SharedWeight(np.array([0.5, -2.0]), index, mask, bits=1)
    weight = shared(torch.zeros(2, 3))
    np.testing.assert_array_equal(weight.detach().numpy(), [[0.5, 0, -2.0], [0.5, -2.0, 0]])
    upstream = torch.tensor([[1.0, 10.0, 2.0], [3.0, 4.0, 20.0]])
    (weight * upstream).sum().backward()
    # centroid 0 is used at (0,0),(1,0); centroid 1 at (0,2),(1,1); pruned positions get no gradient
    np.testing.assert_allclose(shared.centroids.grad.numpy(), [1.0 + 3.0, 2.0 + 4.0])


# ---------------------------------------------------------------------------------- whole method


@pytest.fixture(scope="module")
def resnet18_compressed(tmp_path_factory: pytest.TempPathFactory):
    model = tiny_model("resnet18")
    out = tmp_path_factory.mktemp("dc")
    result = get_compressor("deep_compression").compress(make_ctx(model, out))
    return model, result


def test_file_is_over_10x_smaller_than_fp32_and_size_is_exact(resnet18_compressed) -> None:
    _, result = resnet18_compressed
    (path,) = result.files
    assert result.size_bytes == path.stat().st_size
    assert result.notes["fp32_bytes"] / result.size_bytes == pytest.approx(result.notes["ratio_vs_fp32"])
    assert result.notes["ratio_vs_fp32"] >= 10  # measured about 28x for resnet18 at sparsity 0.9
    assert result.notes["weight_sparsity"] == pytest.approx(0.9, abs=1e-3)


def test_weights_are_sparse_and_shared(resnet18_compressed) -> None:
    _, result = resnet18_compressed
    for name, module in result.module.named_modules():
        if isinstance(module, torch.nn.Conv2d | torch.nn.Linear):
            w = module.weight.detach()
            bits = 5 if isinstance(module, torch.nn.Linear) else 8
            assert (w == 0).float().mean() == pytest.approx(0.9, abs=0.01), name
            assert len(torch.unique(w[w != 0])) <= 2**bits, name


def test_decoder_rebuilds_same_predictions(resnet18_compressed) -> None:
    original, result = resnet18_compressed
    decoded, card = load_deep_compressed(result.files[0])
    assert card.model == "resnet18" and card.small_input
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    a, b = logits(result.module, x), logits(decoded, x)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert torch.equal(a.argmax(1), b.argmax(1))
    for key, value in result.module.state_dict().items():
        assert torch.equal(value, decoded.state_dict()[key]), key
    assert not torch.equal(logits(original, x), a)  # the original was not modified in place...
    assert (original.net.conv1.weight != 0).all()  # ...and keeps its dense weights


def test_truncated_or_tampered_file_gives_model_error(resnet18_compressed, tmp_path: Path) -> None:
    data = resnet18_compressed[1].files[0].read_bytes()
    cases = {
        "truncated": data[: len(data) // 2],
        "checksum": data[:-100] + bytes([data[-100] ^ 1]) + data[-99:],
        "magic": b"NOTMAGIC" + data[8:],
        "truncated ": data[:10],
    }
    for expected, content in cases.items():
        bad = tmp_path / "bad.scdc"
        bad.write_bytes(content)
        with pytest.raises(ModelError, match=expected.strip()):
            load_deep_compressed(bad)
    with pytest.raises(ModelError, match="not found"):
        load_deep_compressed(tmp_path / "missing.scdc")


def test_centroid_finetuning_keeps_sharing_and_sparsity(cells_dir: Path, tmp_path: Path) -> None:
    model = tiny_model("test_resnet")
    dm = cells_datamodule(cells_dir)
    kw = dict(sparsity=0.5, conv_bits=4, fc_bits=2)
    frozen = get_compressor("deep_compression", **kw).compress(make_ctx(model, tmp_path / "a"))
    tuned = get_compressor("deep_compression", **kw, prune_epochs=0, share_epochs=1).compress(
        make_ctx(model, tmp_path / "b", datamodule=dm, finetune_lr=1e-2)
    )
    w0, w1 = frozen.module.net.layer1[0].conv1.weight, tuned.module.net.layer1[0].conv1.weight
    assert torch.equal(w0 == 0, w1 == 0)  # same pruning mask
    assert len(torch.unique(w1[w1 != 0])) <= 16
    assert not torch.allclose(w0, w1)  # the centroids were trained
    decoded, _ = load_deep_compressed(tuned.files[0])
    x = torch.rand(4, 3, 32, 32)
    torch.testing.assert_close(logits(decoded, x), logits(tuned.module, x), rtol=0, atol=1e-6)


def _overall_sparsity(model: torch.nn.Module) -> float:
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    return float(sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights))


def test_gradual_global_pruning_follows_the_cubic_schedule(tmp_path: Path, monkeypatch) -> None:
    """prune_steps=3 reaches the sparsity in 3 growing steps (0.9 x (1 - (1 - t/3)^3)), fine-tuning
    after each; one global threshold spares the narrow early layers (large weights) and cuts the wide
    late ones harder, but never the whole head; masks survive the (simulated) fine-tuning."""
    model = tiny_model("resnet18")
    seen: list[float] = []

    def fake_finetune(module, epochs=None, lr=None):
        seen.append(_overall_sparsity(module))
        with torch.no_grad():  # "training" moves every weight; pruned ones must stay zero
            for m in module.modules():
                if isinstance(m, torch.nn.Conv2d | torch.nn.Linear):
                    m.weight_orig.add_(1e-4)
        return module

    ctx = make_ctx(model, tmp_path, finetune_epochs=3)
    monkeypatch.setattr(ctx, "finetune", fake_finetune)
    opts = dict(sparsity=0.9, prune_steps=3, global_pruning=True, share_epochs=0)
    result = get_compressor("deep_compression", **opts).compress(ctx)
    expected = [0.9 * (1 - (1 - t / 3) ** 3) for t in (1, 2, 3)]  # 0.633, 0.867, 0.9
    assert seen == pytest.approx(expected, abs=2e-3)
    assert result.notes["weight_sparsity"] == pytest.approx(0.9, abs=1e-3)
    net = result.module.net
    early = float((net.layer1[0].conv1.weight == 0).float().mean())
    late = float((net.layer4[1].conv2.weight == 0).float().mean())
    head = float((net.fc.weight == 0).float().mean())
    assert early < 0.6 < 0.92 < late  # per-layer pruning would give 0.9 to both
    assert head == pytest.approx(0.9, abs=0.01)  # in the global pool the small head would go entirely


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"sparsity": 1.0}, "sparsity"),
        ({"conv_bits": 0}, "conv_bits"),
        ({"fc_pos_bits": 20}, "fc_pos_bits"),
        ({"share_epochs": -1}, "share_epochs"),
        ({"bits": 4}, "bits"),
        ({"prune_steps": 0}, "prune_steps"),
        ({"global_pruning": "yes"}, "global_pruning"),
    ],
)
def test_bad_options_name_the_option(options: dict, name: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=name):
        get_compressor("deep_compression", **options).compress(make_ctx(tiny_model(), tmp_path))


def test_finetuning_without_data_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--data"):
        get_compressor("deep_compression").compress(make_ctx(tiny_model(), tmp_path, finetune_epochs=1))


def test_ratio_report_matches_math(resnet18_compressed) -> None:
    notes = resnet18_compressed[1].notes
    kept = sum(layer["kept"] for layer in notes["layers"])
    coded = sum(layer["index_bytes"] + layer["position_bytes"] for layer in notes["layers"])
    assert notes["bits_per_kept_weight"] == pytest.approx(8 * coded / kept)
    assert notes["bits_per_kept_weight"] < 8 + 8  # Huffman beats fixed 8-bit index + 8-bit gap
    assert math.isfinite(notes["ratio_vs_fp32"])

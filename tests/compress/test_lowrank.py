"""Low rank: SVD / Tucker-2 factorisation shrinks the network, keeps outputs at high energy, round-trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _fixtures import logits, make_ctx, tiny_model
from torch import nn

from semicompact.compress import get_compressor
from semicompact.compress.lowrank import decomposable_layers, energy_rank, factorise, load_lowrank
from semicompact.errors import ConfigError, ModelError

X = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_energy_rank() -> None:
    s = torch.tensor([3.0, 2.0, 1.0])  # squared: 9, 4, 1 of 14
    assert energy_rank(s, 0.5) == 1
    assert energy_rank(s, 9 / 14) == 1
    assert energy_rank(s, 0.7) == 2
    assert energy_rank(s, 0.999) == 3


def test_full_rank_factorisations_are_exact() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=True).eval()
    tucker = factorise(conv, (8, 6), tucker_iters=1)
    assert [type(m) for m in tucker] == [nn.Conv2d] * 3 and tucker[1].stride == (2, 2)
    x = torch.randn(2, 6, 9, 9)
    torch.testing.assert_close(tucker(x), conv(x), rtol=1e-4, atol=1e-5)
    lin = nn.Linear(10, 7)
    svd = factorise(lin, (7,))
    v = torch.randn(3, 10)
    torch.testing.assert_close(svd(v), lin(v), rtol=1e-4, atol=1e-5)
    point = nn.Conv2d(12, 5, 1, stride=2)
    svd1 = factorise(point, (5,))
    torch.testing.assert_close(
        svd1(torch.ones(1, 12, 4, 4)), point(torch.ones(1, 12, 4, 4)), rtol=1e-4, atol=1e-5
    )


def test_ratio_reduces_params_and_file_round_trips(tmp_path: Path) -> None:
    model = tiny_model()
    result = get_compressor("lowrank", ratio=0.25).compress(make_ctx(model, tmp_path))
    n = result.notes
    assert n["factorised_layers"] > 0
    assert n["params_after"] < 0.5 * n["params_before"] and n["macs_after"] < n["macs_before"]
    assert sum(p.numel() for p in result.module.parameters()) == n["params_after"]
    assert isinstance(result.module.head, nn.Linear)  # the head is never factorised
    assert sum(p.numel() for p in model.parameters()) == n["params_before"]  # original untouched
    loaded, _ = load_lowrank(result.files[0])
    torch.testing.assert_close(logits(loaded, X), logits(result.module, X), rtol=0, atol=0)


def test_high_energy_keeps_outputs_close_on_low_rank_weights(tmp_path: Path) -> None:
    """Weights of true Tucker/matrix rank 1/4 (plus 0.3% noise): energy 0.999 finds those ranks, saves
    parameters and the logits stay close (random full-rank weights would simply not be factorised)."""
    model = tiny_model()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, layer in decomposable_layers(model):
            w = layer.weight
            r_out, r_in = max(1, w.shape[0] // 4), max(1, w.shape[1] // 4)
            core = torch.randn(r_out, r_in, *w.shape[2:], generator=gen)
            u, v = torch.randn(w.shape[0], r_out, generator=gen), torch.randn(w.shape[1], r_in, generator=gen)
            low = torch.einsum("rskl,or,is->oikl", core, u, v)
            low = low + 0.003 * low.std() * torch.randn(low.shape, generator=gen)
            w.copy_(low * (w.std() / low.std()))
    result = get_compressor("lowrank", energy=0.999).compress(make_ctx(model, tmp_path))
    assert result.notes["factorised_layers"] >= len(decomposable_layers(model)) - 2
    assert result.notes["params_after"] < 0.6 * result.notes["params_before"]
    a, b = logits(model, X), logits(result.module, X)
    error = float((a - b).norm() / a.norm())
    assert error < 0.02 and torch.equal(a.argmax(1), b.argmax(1))
    low_energy = get_compressor("lowrank", energy=0.5).compress(make_ctx(model, tmp_path / "low"))
    assert float((logits(low_energy.module, X) - a).norm() / a.norm()) > 2 * error


def test_layers_without_decomposition_give_clear_errors(tmp_path: Path) -> None:
    model = tiny_model()
    with pytest.raises(ModelError, match="layers=linear"):  # resnet's only linear layer is the head
        get_compressor("lowrank", layers="linear").compress(make_ctx(model, tmp_path))
    with pytest.raises(ModelError, match=r"energy=0\.999"):  # random weights: nothing saves params
        get_compressor("lowrank", energy=0.999).compress(make_ctx(model, tmp_path))


@pytest.mark.parametrize(
    ("options", "name"),
    [({"energy": 0}, "energy"), ({"ratio": 2.0}, "ratio"), ({"layers": "fc"}, "layers"),
     ({"min_saving": 1.0}, "min_saving"), ({"rank": 3}, "rank")],
)  # fmt: skip
def test_bad_options_name_the_option(options: dict, name: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=name):
        get_compressor("lowrank", **options).compress(make_ctx(tiny_model(), tmp_path))


def test_depthwise_convs_are_not_decomposed() -> None:
    model = tiny_model("mobilenetv2_100")
    names = [n for n, _ in decomposable_layers(model)]
    assert names and all(model.get_submodule(n).groups == 1 for n in names if "conv" in n)
    assert not any(isinstance(m, nn.Conv2d) and m.groups > 1 for _, m in decomposable_layers(model))


def test_factorised_student_distils_from_teacher(cells_dir: Path, tmp_path: Path) -> None:
    """Compression + fine-tuning with kd_alpha > 0: the factorised student moves towards the teacher's
    soft targets (KL on the test images falls: 0.033 -> 0.002, measured)."""
    from _fixtures import cells_datamodule

    teacher = tiny_model()
    with torch.no_grad():
        teacher.head.weight.mul_(30)  # confident soft targets from the random teacher
    dm = cells_datamodule(cells_dir)
    plain = get_compressor("lowrank", ratio=0.25).compress(make_ctx(teacher, tmp_path / "a"))
    ctx = make_ctx(teacher, tmp_path / "b", datamodule=dm, finetune_epochs=2, finetune_lr=1e-3)
    ctx.teacher, ctx.kd_alpha, ctx.kd_temperature = teacher, 1.0, 2.0
    distilled = get_compressor("lowrank", ratio=0.25).compress(ctx)
    x = torch.cat([dm.on_after_batch_transfer(b, 0)[0] for b in dm.test_dataloader()])
    target = torch.softmax(logits(teacher, x), 1)

    def kl(student: nn.Module) -> float:
        log_p = torch.log_softmax(logits(student, x), 1)
        return float(torch.nn.functional.kl_div(log_p, target, reduction="batchmean"))

    assert kl(distilled.module) < 0.5 * kl(plain.module)

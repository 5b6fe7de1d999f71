"""The seed paper's statistical procedure (its section 2.5) for comparing models or methods.

Results form a matrix: one row per *block* (a dataset, as in the paper) and one column per *group*
(a model or a method). The procedure, at significance level 0.05:

1. Shapiro-Wilk on every group (normality) and Levene on all groups (homoscedasticity; the original
   mean-centred test). The parametric conditions hold when no test rejects.
2. Parametric: one-way ANOVA, then Bonferroni-Dunn against the control (the best mean): t statistics
   on the ANOVA's pooled within-group variance, p-values multiplied by the k - 1 comparisons.
3. Non-parametric: Friedman, reported as the Iman-Davenport F like the paper (and STAC, the tool it
   used), then Holm against the control (the best average rank) on the rank z statistics
   ``(R_c - R_i) / sqrt(k (k + 1) / (6 n))``.
4. Cohen's d (pooled standard deviation) of the control against every other group.

Average ranks follow the paper: the best group in a block gets rank k, so higher is better.
scipy does the classical tests, statsmodels the p-value adjustment (scikit-posthocs cross-checks the
pairwise statistics in the tests).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests

ALPHA = 0.05


@dataclass
class PostHoc:
    """One comparison of the control with another group."""

    group: str
    statistic: float  # z (Holm, ranks) or t (Bonferroni-Dunn, means); positive: the control is better
    p_value: float
    p_adjusted: float
    cohen_d: float
    significant: bool


@dataclass
class Comparison:
    """Everything the procedure found for one matrix of results."""

    groups: list[str]
    n_blocks: int
    means: dict[str, float]
    stds: dict[str, float]
    normality_p: dict[str, float]  # Shapiro-Wilk p-value per group (nan: fewer than 3 blocks)
    levene_statistic: float
    levene_p: float
    parametric: bool
    test: str  # "ANOVA" or "Friedman"
    statistic: float  # ANOVA F, or the Iman-Davenport F of the Friedman test (chi-square if F is infinite)
    p_value: float
    friedman_chi2: float
    friedman_p: float
    ranks: dict[str, float]  # Friedman average ranks, higher is better
    control: str
    posthoc_method: str  # "Bonferroni-Dunn" or "Holm"
    posthoc: list[PostHoc]
    alpha: float = ALPHA
    notes: list[str] = field(default_factory=list)

    @property
    def significant(self) -> bool:
        return bool(self.p_value < self.alpha)

    def summary(self) -> str:
        """The paper's "After post-hoc procedure" cell: ``control ≈ a, b; control > c, d``."""
        same = [p.group for p in self.posthoc if not p.significant]
        worse = [p.group for p in self.posthoc if p.significant]
        parts = []
        if same:
            parts.append(f"{self.control} ≈ {', '.join(sorted(same))}")
        if worse:
            parts.append(f"{self.control} > {', '.join(sorted(worse))}")
        return "; ".join(parts)

    def stars(self) -> str:
        p = self.p_value
        return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "significant": self.significant, "summary": self.summary()}


def friedman(matrix: np.ndarray) -> tuple[float, float, float, float, np.ndarray]:
    """Friedman chi-square (tie-corrected, as scipy) and p, Iman-Davenport F and p, average ranks.

    Works for two groups too (scipy's ``friedmanchisquare`` needs three).
    """
    x = np.asarray(matrix, dtype=float)
    n, k = x.shape
    ranks = stats.rankdata(x, axis=1)  # ascending: the best result of a block gets rank k
    mean_ranks = ranks.mean(axis=0)
    ssr = float((ranks.sum(axis=0) ** 2).sum())
    chi2 = 12.0 / (n * k * (k + 1)) * ssr - 3.0 * n * (k + 1)
    ties = 0.0
    for row in x:
        _, counts = np.unique(row, return_counts=True)
        ties += float((counts**3 - counts).sum())
    correction = 1.0 - ties / (n * k * (k * k - 1))
    chi2 = chi2 / correction if correction > 0 else 0.0
    chi2_p = float(stats.chi2.sf(chi2, k - 1))
    denominator = n * (k - 1) - chi2
    if denominator <= 1e-12:  # every block ranks the groups identically
        return chi2, chi2_p, math.inf, 0.0, mean_ranks
    iman = (n - 1) * chi2 / denominator
    iman_p = float(stats.f.sf(iman, k - 1, (k - 1) * (n - 1)))
    return float(chi2), chi2_p, float(iman), iman_p, mean_ranks


def cohens_d(a: Sequence[float], b: Sequence[float]) -> float:
    """(mean a - mean b) / pooled standard deviation (n - 1 weights)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    nx, ny = len(x), len(y)
    if nx < 2 or ny < 2:
        return math.nan
    pooled = math.sqrt(((nx - 1) * x.var(ddof=1) + (ny - 1) * y.var(ddof=1)) / (nx + ny - 2))
    diff = float(x.mean() - y.mean())
    if pooled == 0.0:
        return 0.0 if diff == 0.0 else math.copysign(math.inf, diff)
    return diff / pooled


def adjust(p_values: Sequence[float], method: str) -> list[float]:
    """Holm ("holm") or Bonferroni ("bonferroni") adjusted p-values, in the input order."""
    if len(p_values) == 0:
        return []
    return [float(v) for v in multipletests(np.asarray(p_values, dtype=float), method=method)[1]]


def _normality(column: np.ndarray) -> float:
    if len(column) < 3:
        return math.nan
    if np.ptp(column) == 0:
        return math.nan  # a constant group: Shapiro-Wilk is undefined
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.shapiro(column).pvalue)


def compare(
    results: Mapping[str, Sequence[float]] | np.ndarray,
    groups: Sequence[str] | None = None,
    alpha: float = ALPHA,
) -> Comparison:
    """Run the whole procedure on ``results``: {group: values per block} or an (n_blocks, k) array.

    Every group must have a value for every block (the caller drops incomplete blocks).
    """
    if isinstance(results, Mapping):
        groups = list(results)
        matrix = np.column_stack([np.asarray(results[g], dtype=float) for g in groups])
    else:
        matrix = np.asarray(results, dtype=float)
        groups = list(groups) if groups is not None else [f"g{i}" for i in range(matrix.shape[1])]
    if matrix.ndim != 2 or matrix.shape[1] != len(groups):
        raise ValueError(f"results must be (blocks, {len(groups)} groups), got shape {matrix.shape}")
    n, k = matrix.shape
    if k < 2 or n < 2:
        raise ValueError(f"the procedure needs at least 2 groups and 2 blocks, got {k} and {n}")
    if not np.isfinite(matrix).all():
        raise ValueError("results hold missing values; drop the incomplete blocks first")
    notes: list[str] = []
    means = matrix.mean(axis=0)
    stds = matrix.std(axis=0, ddof=1)
    normality = {g: _normality(matrix[:, j]) for j, g in enumerate(groups)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        levene = stats.levene(*matrix.T, center="mean")
    lev_stat, lev_p = float(levene.statistic), float(levene.pvalue)
    normal = all(p > alpha for p in normality.values() if not math.isnan(p))
    checkable = not any(math.isnan(p) for p in normality.values()) and not math.isnan(lev_p)
    if not checkable:
        notes.append("normality or homoscedasticity could not be checked (under 3 blocks or constant groups)")
    parametric = checkable and normal and lev_p > alpha
    chi2, chi2_p, iman, iman_p, ranks = friedman(matrix)

    if parametric:
        anova = stats.f_oneway(*matrix.T)
        statistic, p_value = float(anova.statistic), float(anova.pvalue)
        c = int(np.argmax(means))
        mse = float(((matrix - means) ** 2).sum() / (n * k - k))
        se = math.sqrt(mse * 2.0 / n)
        others = [j for j in range(k) if j != c]
        t = [(means[c] - means[j]) / se if se > 0 else math.inf for j in others]
        raw = [float(2 * stats.t.sf(abs(v), n * k - k)) for v in t]
        adjusted = adjust(raw, "bonferroni")
        test, post = "ANOVA", "Bonferroni-Dunn"
    else:
        statistic, p_value = iman, iman_p
        if math.isinf(iman):  # every block ranks the groups alike: F is undefined, chi-square is not
            statistic, p_value = chi2, chi2_p
            notes.append("every block ranks the groups identically; Friedman chi-square reported")
        c = int(np.argmax(ranks))
        se = math.sqrt(k * (k + 1) / (6.0 * n))
        others = [j for j in range(k) if j != c]
        t = [(ranks[c] - ranks[j]) / se for j in others]
        raw = [float(2 * stats.norm.sf(abs(v))) for v in t]
        adjusted = adjust(raw, "holm")
        test, post = "Friedman", "Holm"
    posthoc = [
        PostHoc(
            group=groups[j],
            statistic=float(z),
            p_value=p,
            p_adjusted=pa,
            cohen_d=cohens_d(matrix[:, c], matrix[:, j]),
            significant=bool(p_value < alpha and pa < alpha),
        )
        for j, z, p, pa in zip(others, t, raw, adjusted, strict=True)
    ]
    posthoc.sort(key=lambda r: r.p_value)
    return Comparison(
        groups=list(groups),
        n_blocks=n,
        means={g: float(m) for g, m in zip(groups, means, strict=True)},
        stds={g: float(s) for g, s in zip(groups, stds, strict=True)},
        normality_p=normality,
        levene_statistic=lev_stat,
        levene_p=lev_p,
        parametric=parametric,
        test=test,
        statistic=float(statistic),
        p_value=float(p_value),
        friedman_chi2=chi2,
        friedman_p=chi2_p,
        ranks={g: float(r) for g, r in zip(groups, ranks, strict=True)},
        control=groups[c],
        posthoc_method=post,
        posthoc=posthoc,
        alpha=alpha,
        notes=notes,
    )


def pairwise_p(matrix: np.ndarray, groups: Sequence[str], parametric: bool = False) -> Any:
    """All-pairs adjusted p-values (a pandas DataFrame) for the critical-difference diagram.

    Non-parametric: scikit-posthocs' Siegel-Castellan rank z test with Holm; parametric: pooled t
    tests with Bonferroni.
    """
    import pandas as pd
    import scikit_posthocs as sp

    x = np.asarray(matrix, dtype=float)
    if parametric:
        long = pd.DataFrame({"v": x.T.ravel(), "g": np.repeat(np.asarray(groups, dtype=object), x.shape[0])})
        table = sp.posthoc_ttest(long, val_col="v", group_col="g", pool_sd=True, p_adjust="bonferroni")
    else:
        table = sp.posthoc_siegel_friedman(x, p_adjust="holm")
        table.index = table.columns = list(groups)
    return table.loc[list(groups), list(groups)]

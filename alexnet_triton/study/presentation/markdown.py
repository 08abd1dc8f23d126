"""What the report's sections share: network names, the provider the torch.compile paragraphs describe, and
Markdown cells (images, ratios, one quantity per provider and the subject's ratios to the baselines)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..registries.providers import PROVIDERS, SUBJECT, baselines

COMPILED = "compiled"  # the provider whose partition and CPU-target code the torch.compile paragraphs describe


def image(path: Path, reports: Path, alt: str) -> str:
    return f"![{alt}]({path.relative_to(reports).as_posix()})"


def images(reports: Path, folder: str) -> list[str]:
    return [image(p, reports, p.stem.replace("_", " ")) for p in sorted((reports / folder).glob("*.png"))]


def ratio(numerator: float, denominator: float = 1.0) -> str:
    """``numerator / denominator`` as "0.31×"; "–" when the denominator is 0 or either is missing."""
    return f"{numerator / denominator:.2f}×" if denominator and pd.notna(numerator) and pd.notna(denominator) \
        else "–"


def read_csv(path: Path) -> pd.DataFrame:
    """An analysis' CSV, its variant column as text ("2012" is a name, not a number)."""
    return pd.read_csv(path, dtype={"variant": str})


def value(per_provider: pd.Series, provider: str, form: str) -> str:
    """``per_provider[provider]`` formatted, or "–" when that provider was not counted."""
    return format(per_provider[provider], form) if provider in per_provider.index else "–"


def peer_ratios(per_provider: pd.Series) -> list[str]:
    """The subject / each baseline of one quantity indexed by provider ("–" where a provider is missing)."""
    subject = per_provider.get(SUBJECT)
    return [ratio(subject, per_provider.get(peer, 0)) for peer in baselines()]


def provider_cells(per_provider: pd.Series, form: str) -> list[str]:
    """Every provider's value of one quantity formatted, then the subject's ratios to the baselines."""
    return [value(per_provider, p, form) for p in PROVIDERS] + peer_ratios(per_provider)


def markdown_table(frame: pd.DataFrame) -> list[str]:
    """The rows of ``frame`` as Markdown table lines, its column names the header; numbers to 3 significant
    digits (whole with thousands separators from 1,000)."""
    def cell(v) -> str:
        return str(v) if not isinstance(v, float) else f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"
    return (["| " + " | ".join(frame.columns) + " |", "|---" * len(frame.columns) + "|"]
            + ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)])


def ratio_headers() -> list[str]:
    """The column headers of ``peer_ratios``: "Triton / PyTorch eager", ..."""
    return [f"{PROVIDERS[SUBJECT].label} / {PROVIDERS[peer].label}" for peer in baselines()]

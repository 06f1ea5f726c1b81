"""Per-trial criteria coverage: how much of each trial the engine can decide."""

from __future__ import annotations

from dataclasses import dataclass

from cds_service.eligibility.trials import Trial


@dataclass(frozen=True)
class Coverage:
    trial: str
    inclusion: int
    exclusion: int
    computable: int
    review: int
    partly_review: int
    variables: list[str]

    @property
    def total(self) -> int:
        return self.inclusion + self.exclusion


def coverage(trial: Trial) -> Coverage:
    crit = trial.criteria
    return Coverage(
        trial=trial.id,
        inclusion=sum(c.type == "inclusion" for c in crit),
        exclusion=sum(c.type == "exclusion" for c in crit),
        computable=sum(c.computable for c in crit),
        review=sum(not c.computable for c in crit),
        partly_review=sum(bool(c.also_review) for c in crit),
        variables=sorted(trial.variables),
    )


def catalog_entry(trial: Trial) -> dict[str, object]:
    """A trial's line in the catalogue (REST /trials and `trial-matcher trials`)."""
    cov = coverage(trial)
    return {
        "id": trial.id,
        "title": trial.title,
        "short_title": trial.short_title,
        "sponsor": trial.sponsor,
        "phase": trial.phase,
        "status": trial.status,
        "url": trial.url,
        "min_age": trial.min_age,
        "max_age": trial.max_age,
        "criteria": cov.total,
        "computable": cov.computable,
        "review": cov.review,
    }


def render_text(rows: list[Coverage]) -> str:
    lines = [f"{'trial':<13} {'total':>5} {'incl':>5} {'excl':>5} {'computable':>10} {'review':>6} {'partly':>6}"]
    for r in rows:
        lines.append(
            f"{r.trial:<13} {r.total:>5} {r.inclusion:>5} {r.exclusion:>5} {r.computable:>10} {r.review:>6} "
            f"{r.partly_review:>6}"
        )
    for r in rows:
        lines.append("")
        lines.append(f"{r.trial} variables ({len(r.variables)}):")
        lines.append("  " + ", ".join(r.variables))
    lines.append("")
    lines.append(
        "computable: decided by a rule; review: a person decides; partly: a rule decides part, a person the rest"
    )
    return "\n".join(lines)

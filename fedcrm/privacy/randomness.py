"""A job's randomness: the DP noise and DP-SGD's Poisson batch sampling, chosen in one place.

"The ε we print is the guarantee we give." The accountant's ε assumes that both the noise and
the batch memberships are secret. ``job_randomness`` is the single place that turns
``privacy.randomness`` into the two sources; ``Randomness`` derives its warning from what it
holds, so a seeded sampler or seeded noise can never be obtained without the warning that the
ε does not hold (and the warning never shows for fully secure randomness). ``DPSGDTrainer``
accepts only a ``Randomness``, so a bare seeded sampler cannot reach training.

Pure numpy + ``cryptography``: importable without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fedcrm.privacy.noise import NoiseSource, SecureGaussian, SeededGaussian
from fedcrm.privacy.sampling import BatchSampler, SecurePoissonSampler, SeededPoissonSampler

RandomnessMode = Literal["secure", "seeded"]

EPSILON_DOES_NOT_HOLD = "the printed ε does NOT hold"


def seeded_warning(seeded_parts: list[str]) -> str:
    """The one wording of the warning, for the log, the summary, the CLI, MLflow and the compliance report."""
    return (
        f"{' and '.join(seeded_parts)} {'are' if len(seeded_parts) > 1 else 'is'} reproducible from training.seed "
        f"(privacy.randomness: seeded), which is public (an MLflow param and a Prefect parameter), so "
        f"{EPSILON_DOES_NOT_HOLD}: anyone who knows the seed knows every batch and can remove the noise. "
        "Research use only; set privacy.randomness=secure for a private job."
    )


@dataclass(frozen=True)
class Randomness:
    """The sources one job's DP mechanisms draw from, and the warning they imply."""

    noise: NoiseSource = field(default_factory=SecureGaussian)
    sampler: BatchSampler = field(default_factory=SecurePoissonSampler)

    @property
    def secure(self) -> bool:
        return bool(self.noise.secure and self.sampler.secure)

    @property
    def warning(self) -> str | None:
        """None exactly when every source is secure; otherwise says which is seeded and that ε does not hold."""
        seeded = [name for name, part in (("DP-SGD's batch sampling", self.sampler), ("the DP noise", self.noise))
                  if not part.secure]
        return seeded_warning(seeded) if seeded else None


def job_randomness(mode: RandomnessMode, seed: int) -> Randomness:
    """Fresh CSPRNG sources (``secure``, the default), or both reproducible from ``seed`` (research)."""
    if mode == "seeded":
        return Randomness(noise=SeededGaussian(seed), sampler=SeededPoissonSampler(seed))
    return Randomness()


def randomness_warning(mode: RandomnessMode) -> str | None:
    """What a job in ``mode`` must say next to its ε (for the coordinator, which draws nothing itself)."""
    return job_randomness(mode, 0).warning

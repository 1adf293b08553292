"""Privacy accounting for record-level DP-SGD: pure numpy/scipy, importable without torch.

* ``rdp``: Rényi-DP of the Poisson-subsampled Gaussian mechanism (Mironov et al. 2019) with the
  RDP→(ε, δ) conversion of Balle et al. 2020.
* ``prv``: numerical composition of privacy random variables (Gopi et al. 2021): tight ε.
* ``accountant``: events, composition, noise calibration and δ policy.

The RDP and PRV maths are ports of Opacus 1.6's ``opacus.accountants.analysis`` (Apache-2.0,
Meta Platforms), which are themselves numpy/scipy but cannot be imported without torch because
``opacus/__init__`` imports it. ``tests/fedcrm/privacy`` checks that both ports agree with
Opacus' own accountants.
"""

from fedcrm.privacy.accountant import (
    ACCOUNTANTS,
    PrivacyEvent,
    calibrate_noise_multiplier,
    check_delta,
    compose_epsilon,
)

__all__ = ["ACCOUNTANTS", "PrivacyEvent", "calibrate_noise_multiplier", "check_delta", "compose_epsilon"]

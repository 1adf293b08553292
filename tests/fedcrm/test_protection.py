"""The job's record protection (fedcrm/protection.py): DP or nothing, chosen once, and asked, not tested."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from fedcrm.config import PROJECT_ROOT, load_config
from fedcrm.errors import PrivacyError
from fedcrm.privacy.plan import make_plan
from fedcrm.protection import DifferentialPrivacy, NoProtection, make_protection


def test_the_default_protects_records_with_dp_and_off_protects_nothing() -> None:
    assert isinstance(make_protection(load_config().privacy), DifferentialPrivacy)
    assert isinstance(make_protection(load_config(overrides=["privacy.mode=off"]).privacy), NoProtection)


def test_a_dp_plan_is_made_from_the_released_row_count_only() -> None:
    privacy = load_config(overrides=["privacy.min_k=10", "privacy.accountant=rdp"]).privacy
    training = load_config().training
    protection = make_protection(privacy)
    plans = {n: protection.plan(n, training, region="eu") for n in range(1000, 1010)}
    assert len({(p.noise_multiplier, p.sample_rate, p.planned_steps) for p in plans.values()}) == 1
    expected = make_plan(1000, batch_size=training.batch_size, local_epochs=training.local_epochs, rounds=training.rounds,
                         personal_rounds=training.personal_rounds, target_epsilon=privacy.target_epsilon, delta=privacy.delta, accountant="rdp",
                         max_grad_norm=privacy.max_grad_norm, max_noise_multiplier=privacy.max_noise_multiplier,
                         region="eu")
    assert plans[1007].noise_multiplier == expected.noise_multiplier
    with pytest.raises(PrivacyError, match="fewer than privacy.min_k = 10"):
        protection.plan(9, training, region="eu")


def test_without_protection_nothing_is_planned_noised_or_deployable() -> None:
    config = load_config(overrides=["privacy.mode=off"])
    protection = make_protection(config.privacy)
    assert protection.plan(3, config.training, region="eu") is None  # no plan, so not even a size check
    assert protection.statistics_noise_multiplier is None and protection.spends_budget is False
    assert "NOT differentially private" in protection.warning and "never deployable" in protection.never_deployable
    note = protection.note(config, "fedavg")
    assert not note.differential_privacy and not note.epsilon_holds
    assert (note.target_epsilon, note.delta, note.accountant, note.randomness) == (None, None, None, None)


def test_dp_states_its_epsilon_and_warns_only_when_research_randomness_voids_it() -> None:
    secure = make_protection(load_config().privacy)
    assert secure.warning is None and secure.never_deployable is None and secure.spends_budget
    assert secure.statistics_noise_multiplier == load_config().privacy.statistics_noise_multiplier
    seeded_config = load_config(overrides=["privacy.randomness=seeded"])
    seeded = make_protection(seeded_config.privacy)
    assert seeded.warning and seeded.note(seeded_config, "fedavg").note.startswith(f"WARNING: {seeded.warning}")
    assert not seeded.note(seeded_config, "fedavg").epsilon_holds


def _reads_privacy_mode(path) -> list[int]:
    """Lines where ``<something>.privacy.mode`` or ``<privacy spec>.mode`` is compared."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                if (isinstance(side, ast.Attribute) and side.attr == "mode" and isinstance(side.value, ast.Attribute)
                        and side.value.attr == "privacy") or (isinstance(side, ast.Attribute) and side.attr == "mode"
                                                             and isinstance(side.value, ast.Name)
                                                             and side.value.id == "privacy"):
                    lines.append(node.lineno)
    return lines


def test_only_the_protection_and_the_config_validation_read_the_privacy_mode() -> None:
    """DP is a wrapper chosen once: a step that tests the flag again is a second place to keep in step."""
    readers = {}
    for layer in ("cli", "flows", "tasks", "connectors", "fedcrm"):
        for path in sorted((PROJECT_ROOT / layer).rglob("*.py")):
            if lines := _reads_privacy_mode(path):
                readers[str(path.relative_to(PROJECT_ROOT))] = lines
    assert set(readers) == {"fedcrm/protection.py", "fedcrm/config.py"}, readers
    assert len(readers["fedcrm/protection.py"]) == 1


def test_the_protection_imports_without_torch() -> None:
    code = "import sys, fedcrm.protection; assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PROJECT_ROOT)

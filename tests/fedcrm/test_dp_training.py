"""Record-level DP-SGD in a region: it learns, clips per sample, adds real noise; FedProx pulls back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from fedcrm.config import TrainingSpec, load_config
from fedcrm.errors import ConfigError, PrivacyError
from fedcrm.model import build_model, get_vector, predict_proba, set_vector
from fedcrm.privacy.noise import SecureGaussian
from fedcrm.privacy.plan import make_plan
from fedcrm.privacy.randomness import Randomness, job_randomness
from fedcrm.privacy.sampling import SecurePoissonSampler, SeededPoissonSampler
from fedcrm.regional import make_trainer
from fedcrm.training import DPSGDTrainer, PoissonBatches, SGDTrainer, _tensors

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook:UserWarning")

N, D = 2000, 5


def separable(n: int = N, d: int = D, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x, (x[:, 0] + 0.5 * x[:, 1] - 0.3 * x[:, 2] > 0).astype(np.float32)


def spec(**overrides) -> TrainingSpec:
    return TrainingSpec(**({"hidden_sizes": [], "learning_rate": 0.5, "batch_size": 100, "local_epochs": 2} | overrides))


def start() -> np.ndarray:
    return get_vector(build_model(D, []))


def dp(noise: float = 0.5, clip: float = 1.0, q: float = 0.05, randomness: Randomness | None = None, rows: int = N,
       **spec_overrides) -> DPSGDTrainer:
    return DPSGDTrainer(spec(**spec_overrides), noise_multiplier=noise, max_grad_norm=clip, sample_rate=q,
                        expected_batch_size=max(1, round(q * rows)), randomness=randomness or Randomness())


def fixed_batches(seed: int = 0) -> Randomness:
    """Secure noise over reproducible batches: only for tests that must compare two noise draws."""
    return Randomness(noise=SecureGaussian(), sampler=SeededPoissonSampler(seed))


def auc(vector: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    return float(roc_auc_score(y, predict_proba(set_vector(build_model(x.shape[1], []), vector), x)))


def test_dp_sgd_still_learns_a_separable_problem():
    x, y = separable()
    x_test, y_test = separable(1000, seed=1)
    g = start()
    assert auc(g, x_test, y_test) < 0.8  # the untrained model does not already solve it

    update = dp(noise=0.5, clip=1.0, q=0.05).train(g, x, y, seed=0)

    assert auc(update.vector, x_test, y_test) > 0.9
    assert update.n_examples == N
    assert np.isfinite(update.mean_loss)
    assert update.vector.shape == g.shape and np.all(np.isfinite(update.vector))


@pytest.mark.parametrize(("q", "epochs"), [(0.05, 2), (0.03, 1), (0.5, 3)])
def test_steps_are_local_epochs_times_int_one_over_q(q, epochs):
    x, y = separable(400)
    update = dp(q=q, local_epochs=epochs).train(start(), x, y, seed=0)
    assert update.steps == epochs * int(1 / q)


def test_per_sample_gradients_are_clipped():
    x, y = separable()
    x = x * 50  # large raw gradients: without clipping every step would move far
    g = start()
    lr, clip, q = 1.0, 1e-3, 0.05

    dp_update = dp(noise=1e-6, clip=clip, q=q, learning_rate=lr, local_epochs=1).train(g, x, y, seed=0)
    sgd_update = SGDTrainer(spec(learning_rate=lr, local_epochs=1)).train(g, x, y, seed=0)

    dp_moved = np.linalg.norm(dp_update.vector - g)
    bound = lr * clip * dp_update.steps * (1 + 1e-3) + 1e-5
    assert 0 < dp_moved <= bound
    assert np.linalg.norm(sgd_update.vector - g) > 100 * bound


def test_two_trainings_with_the_same_config_and_seed_draw_different_batches():
    """Amplification by subsampling assumes secret batches: with negligible noise, the same
    configuration and the same (public) seed must still give different updates, because the Poisson
    batches come from the CSPRNG (on the old seeded DataLoader they were identical)."""
    x, y = separable(500)
    a = dp(noise=1e-9).train(start(), x, y, seed=3)
    b = dp(noise=1e-9).train(start(), x, y, seed=3)
    assert a.steps == b.steps
    assert np.linalg.norm(a.vector - b.vector) > 1e-3


def test_the_job_trainer_draws_different_batch_memberships_each_time_it_is_built():
    """Two trainings from one config (make_trainer, as local_training builds it) see different batches."""
    config = load_config(overrides=["training.batch_size=50"])
    labels = np.array([0.0, 1.0] * 250, dtype=np.float32)
    plan = make_plan(500, batch_size=50, local_epochs=1, rounds=2, target_epsilon=3, delta=1e-5, accountant="rdp",
                     max_grad_norm=1.0, max_noise_multiplier=50)
    data = _tensors(np.zeros((500, 2), dtype=np.float32), labels)

    def memberships() -> list[frozenset[int]]:
        trainer = make_trainer(config, plan, labels, seed=config.training.seed)
        assert trainer.randomness.secure and trainer.randomness.warning is None
        batches = PoissonBatches(data, trainer.sample_rate, trainer.randomness.sampler)
        # rows are told apart by their index: tag each row's feature with it
        data.tensors[0][:, 0] = torch.arange(500, dtype=torch.float32)
        return [frozenset(xb[:, 0].int().tolist()) for xb, _ in batches]

    first, second = memberships(), memberships()
    assert len(first) == len(second) == int(1 / plan.sample_rate)
    assert first != second
    assert all(a != b for a, b in zip(first, second))  # 1/C(500, ~50) per step of a coincidence


def test_poisson_batches_include_each_row_at_the_sample_rate_and_keep_empty_batches():
    data = _tensors(np.zeros((2000, 2), dtype=np.float32), np.zeros(2000, dtype=np.float32))
    sizes = [len(yb) for _, yb in PoissonBatches(data, 0.05, SecurePoissonSampler())]
    assert len(sizes) == 20
    assert abs(np.mean(sizes) - 100) < 4 * np.sqrt(2000 * 0.05 * 0.95 / 20)
    xb, yb = next(iter(PoissonBatches(data, 1e-9, SecurePoissonSampler())))  # (almost surely) nobody drawn
    assert xb.shape == (0, 2) and yb.shape == (0,)


def test_empty_batches_still_count_as_steps():
    x, y = separable(50)
    update = dp(q=0.001, randomness=fixed_batches()).train(start(), x, y, seed=0)  # almost every batch is empty
    assert update.steps == 2 * 1000  # two local epochs of 1/q steps


def test_seeded_research_mode_reproduces_batches_and_noise_and_carries_its_warning():
    x, y = separable(500)
    a = dp(noise=5.0, randomness=job_randomness("seeded", 3)).train(start(), x, y, seed=0)
    b = dp(noise=5.0, randomness=job_randomness("seeded", 3)).train(start(), x, y, seed=0)
    c = dp(noise=5.0, randomness=job_randomness("seeded", 4)).train(start(), x, y, seed=0)
    np.testing.assert_array_equal(a.vector, b.vector)
    assert not np.allclose(a.vector, c.vector)
    assert "does NOT hold" in job_randomness("seeded", 3).warning


def test_the_trainer_refuses_a_bare_sampler_that_would_bypass_the_warning():
    with pytest.raises(TypeError, match="Randomness"):
        DPSGDTrainer(spec(), noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.1, expected_batch_size=10,
                     randomness=SeededPoissonSampler(1))


def test_noise_is_added_at_the_configured_scale():
    """The same (seeded, test-only) Poisson batches: the only difference is the Gaussian noise,
    std = noise_multiplier · max_grad_norm / expected batch size per coordinate and step."""
    x, y = separable()
    g = start()
    lr, sigma, clip, q = 0.5, 5.0, 1.0, 0.05

    noisy = dp(noise=sigma, clip=clip, q=q, learning_rate=lr, randomness=fixed_batches()).train(g, x, y, seed=0)
    quiet = dp(noise=1e-9, clip=clip, q=q, learning_rate=lr, randomness=fixed_batches()).train(g, x, y, seed=0)

    assert noisy.steps == quiet.steps
    difference = np.linalg.norm(noisy.vector - quiet.vector)
    per_step = lr * sigma * clip / (q * N) * np.sqrt(g.size)  # expected norm of one step's noise
    # gradient descent on a convex loss does not amplify differences: at most √steps steps' worth,
    # and far more than none
    assert 0.3 * per_step < difference < 2 * np.sqrt(noisy.steps) * per_step


def test_dp_noise_is_fresh_in_every_run_even_with_the_same_seed():
    """Noise seeded from a public config value could be subtracted by anyone who knows it."""
    x, y = separable(500)
    trainer = dp(noise=5.0, q=1.0)  # q = 1: every row in every batch, so only the noise can differ

    a = trainer.train(start(), x, y, seed=1)
    b = trainer.train(start(), x, y, seed=1)

    assert not np.allclose(a.vector, b.vector)


@pytest.mark.parametrize("trainer_kind", ["sgd", "dp"])
def test_fedprox_pulls_towards_the_global_model(trainer_kind):
    x, y = separable()
    g = start()

    def moved(mu: float) -> float:
        if trainer_kind == "sgd":
            trainer = SGDTrainer(spec(learning_rate=0.1), prox_mu=mu)
        else:
            trainer = DPSGDTrainer(spec(learning_rate=0.1), noise_multiplier=1e-6, max_grad_norm=1.0, sample_rate=0.05,
                                   expected_batch_size=round(0.05 * N), prox_mu=mu)
        return float(np.linalg.norm(trainer.train(g, x, y, seed=0).vector - g))

    free, proximal = moved(0.0), moved(5.0)
    assert proximal < 0.5 * free


def test_make_trainer_picks_dp_sgd_exactly_when_there_is_a_plan():
    config = load_config(
        overrides=["training.batch_size=100", "training.local_epochs=2", "training.rounds=3", "privacy.accountant=rdp",
                   "privacy.max_grad_norm=0.7"]
    )
    labels = np.array([1.0] * 250 + [0.0] * 750, dtype=np.float32)
    p = make_plan(
        1000, batch_size=100, local_epochs=2, rounds=3, target_epsilon=3.0, delta=1e-5, accountant="rdp",
        max_grad_norm=0.7, max_noise_multiplier=50.0,
    )

    private = make_trainer(config, p, labels, prox_mu=0.2)
    plain = make_trainer(config.model_copy(update={"training": config.training.model_copy(
        update={"class_weighting": "balanced"})}), None, labels, prox_mu=0.2)

    assert isinstance(private, DPSGDTrainer)
    assert (private.noise_multiplier, private.max_grad_norm, private.sample_rate) == (p.noise_multiplier, 0.7, 0.1)
    assert private.prox_mu == 0.2 and private.pos_weight == 1.0
    assert private.spec == config.training
    assert isinstance(plain, SGDTrainer) and not isinstance(plain, DPSGDTrainer)
    assert plain.prox_mu == 0.2 and plain.pos_weight == pytest.approx(3.0)


def test_the_dp_trainer_s_parameters_depend_on_the_released_count_only():
    """The noised gradient sum is divided by q × n_public, not q × n: two regions whose exact sizes differ
    but round to the same released count train with identical public parameters."""
    config = load_config(overrides=["training.batch_size=100", "privacy.min_k=5"])
    p = make_plan(1000, batch_size=100, local_epochs=1, rounds=3, target_epsilon=3.0, delta=1e-5, accountant="rdp",
                  max_grad_norm=1.0, max_noise_multiplier=50.0)
    trainers = [make_trainer(config, p, np.array([1.0, 0.0] * 500 + [0.0] * extra, dtype=np.float32))
                for extra in range(5)]  # n = 1000 … 1004, all released as 1000

    assert {t.expected_batch_size for t in trainers} == {100}
    assert len({(t.noise_multiplier, t.sample_rate, t.pos_weight) for t in trainers}) == 1


def test_balanced_class_weighting_is_refused_under_dp():
    """'balanced' rescales every positive's gradient from the exact label counts before clipping."""
    with pytest.raises(ConfigError, match="class_weighting 'balanced'"):
        load_config(overrides=["training.class_weighting=balanced"])
    assert load_config(overrides=["training.class_weighting=balanced", "privacy.mode=off"]).training.class_weighting == "balanced"
    sneaked = load_config().model_copy(update={"training": TrainingSpec(class_weighting="balanced")})  # skips validation
    p = make_plan(1000, batch_size=100, local_epochs=1, rounds=1, target_epsilon=3.0, delta=1e-5, accountant="rdp",
                  max_grad_norm=1.0, max_noise_multiplier=50.0)
    with pytest.raises(PrivacyError, match="balanced"):
        make_trainer(sneaked, p, np.array([1.0, 0.0] * 500, dtype=np.float32))


class _NobodySampler:
    """Every batch empty (test only; not secure, so its Randomness carries the warning)."""

    secure = False

    def poisson_mask(self, n: int, sample_rate: float) -> np.ndarray:
        return np.zeros(n, dtype=bool)


def test_an_empty_batch_is_still_a_noised_step():
    """The accountant counts an empty batch as a step of the sampled Gaussian mechanism: noise alone.
    A skipped step would leave the model unchanged and show that nobody was sampled."""
    x, y = separable(200)
    g = get_vector(build_model(D, [16]))  # 113 parameters: enough coordinates to measure the noise's scale
    lr, sigma, clip, q = 0.5, 1.0, 1.0, 0.1
    nobody = Randomness(noise=SecureGaussian(), sampler=_NobodySampler())
    trainer = dp(noise=sigma, clip=clip, q=q, learning_rate=lr, local_epochs=1, hidden_sizes=[16], randomness=nobody, rows=200)
    update = trainer.train(g, x, y, seed=0)

    assert update.steps == 10 and np.isnan(update.mean_loss)  # no record, no loss
    per_step = lr * sigma * clip / (q * 200)  # std per coordinate: noise / expected batch size
    # ten noise-only steps: the update is N(0, 10·per_step²) per coordinate (χ²₁₁₃ / 113 lies in [0.6, 1.5])
    ratio = np.mean((update.vector - g) ** 2) / (10 * per_step**2)
    assert 0.6 < ratio < 1.5

"""Record-level DP-SGD in a region: it learns, clips per sample, adds real noise; FedProx pulls back."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fedcrm.config import TrainingSpec, load_config
from fedcrm.model import build_model, get_vector, predict_proba, set_vector
from fedcrm.privacy.plan import make_plan
from fedcrm.regional import make_trainer
from fedcrm.training import DPSGDTrainer, SGDTrainer

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


def dp(noise: float = 0.5, clip: float = 1.0, q: float = 0.05, **spec_overrides) -> DPSGDTrainer:
    return DPSGDTrainer(spec(**spec_overrides), noise_multiplier=noise, max_grad_norm=clip, sample_rate=q)


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


def test_same_seed_reproduces_the_same_poisson_batches():
    """Batch sampling is seeded (reproducible); only the noise is fresh. With negligible noise
    the same seed therefore gives (almost) the same update."""
    x, y = separable(500)
    a = dp(noise=1e-9).train(start(), x, y, seed=3)
    b = dp(noise=1e-9).train(start(), x, y, seed=3)
    np.testing.assert_allclose(a.vector, b.vector, atol=1e-6)


def test_noise_is_added_at_the_configured_scale():
    """Same seed (so the same Poisson batches): the only difference is the Gaussian noise,
    std = noise_multiplier · max_grad_norm / expected batch size per coordinate and step."""
    x, y = separable()
    g = start()
    lr, sigma, clip, q = 0.5, 5.0, 1.0, 0.05

    noisy = dp(noise=sigma, clip=clip, q=q, learning_rate=lr).train(g, x, y, seed=0)
    quiet = dp(noise=1e-9, clip=clip, q=q, learning_rate=lr).train(g, x, y, seed=0)

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


def test_different_seeds_give_different_updates():
    x, y = separable(500)
    a = dp(noise=5.0).train(start(), x, y, seed=1)
    b = dp(noise=5.0).train(start(), x, y, seed=2)
    assert not np.allclose(a.vector, b.vector)


@pytest.mark.parametrize("trainer_kind", ["sgd", "dp"])
def test_fedprox_pulls_towards_the_global_model(trainer_kind):
    x, y = separable()
    g = start()

    def moved(mu: float) -> float:
        if trainer_kind == "sgd":
            trainer = SGDTrainer(spec(learning_rate=0.1), prox_mu=mu)
        else:
            trainer = DPSGDTrainer(spec(learning_rate=0.1), noise_multiplier=1e-6, max_grad_norm=1.0, sample_rate=0.05, prox_mu=mu)
        return float(np.linalg.norm(trainer.train(g, x, y, seed=0).vector - g))

    free, proximal = moved(0.0), moved(5.0)
    assert proximal < 0.5 * free


def test_make_trainer_picks_dp_sgd_exactly_when_there_is_a_plan():
    config = load_config(
        overrides=["training.batch_size=100", "training.local_epochs=2", "training.rounds=3", "privacy.accountant=rdp",
                   "privacy.max_grad_norm=0.7", "training.class_weighting=balanced"]
    )
    labels = np.array([1.0] * 250 + [0.0] * 750, dtype=np.float32)
    p = make_plan(
        1000, batch_size=100, local_epochs=2, rounds=3, target_epsilon=3.0, delta=1e-5, accountant="rdp",
        max_grad_norm=0.7, max_noise_multiplier=50.0,
    )

    private = make_trainer(config, p, labels, prox_mu=0.2)
    plain = make_trainer(config, None, labels, prox_mu=0.2)

    assert isinstance(private, DPSGDTrainer)
    assert (private.noise_multiplier, private.max_grad_norm, private.sample_rate) == (p.noise_multiplier, 0.7, 0.1)
    assert private.prox_mu == 0.2 and private.pos_weight == pytest.approx(3.0)
    assert private.spec == config.training
    assert isinstance(plain, SGDTrainer) and not isinstance(plain, DPSGDTrainer)
    assert plain.prox_mu == 0.2 and plain.pos_weight == pytest.approx(3.0)

"""Tests for :mod:`mbrl.actor_critic` against hand-computed values: replay lambda-returns, the return normaliser,
the imagined-trajectory losses and metrics, continue probabilities in imagination, the replay value loss and its
wiring into :meth:`mbrl.agent.Agent.train_step` (reference: danijar/dreamerv3 ``dreamerv3/agent.py``)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from mbrl.actor_critic import ActorCritic, episode_last, lambda_return, replay_lambda_return
from mbrl.agent import Agent
from mbrl.config import build_config

pytestmark = pytest.mark.usefixtures("single_thread")

F, A, K = 12, 2, 31  # feature size, action size, two-hot bins


def _ac(tiny_cfg, **loss) -> ActorCritic:
    """A small actor-critic; ``loss`` overrides :class:`mbrl.config.LossConfig` fields."""
    cfg = tiny_cfg()
    torch.manual_seed(0)
    return ActorCritic(F, A, cfg.model, dataclasses.replace(cfg.loss, **loss))


def _f(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


# ---------------------------------------------------------------- replay lambda-returns


def test_replay_lambda_return_hand_computed():
    reward, boot = _f([0.0, 1.0, 2.0]), _f([10.0, 20.0, 30.0])
    none = torch.zeros(1, 3, dtype=torch.bool)
    # R_2 = boot_2 = 30; R_1 = r_2 + g (0.5 boot_2 + 0.5 R_2) = 2 + 0.5 * 30 = 17
    # R_0 = r_1 + g (0.5 boot_1 + 0.5 R_1) = 1 + 0.5 * (10 + 8.5) = 10.25
    ret = replay_lambda_return(reward, none, none, boot, disc=0.5, lam=0.5)
    torch.testing.assert_close(ret, _f([10.25, 17.0]))
    # step 1 ends the episode (is_last): R_0 bootstraps fully from boot_1: 1 + 0.5 * 20 = 11
    last = torch.tensor([[False, True, False]])
    torch.testing.assert_close(replay_lambda_return(reward, none, last, boot, 0.5, 0.5), _f([11.0, 17.0]))
    # step 2 is terminal: R_1 = r_2 = 2 and R_0 = 1 + 0.5 * (10 + 0.5 * 2) = 6.5
    term = torch.tensor([[False, False, True]])
    torch.testing.assert_close(replay_lambda_return(reward, term, term, boot, 0.5, 0.5), _f([6.5, 2.0]))


def test_replay_lambda_return_equals_imagined_form_with_value_bootstrap():
    gen = torch.Generator().manual_seed(0)
    b, t = 3, 6
    reward, value = torch.randn(b, t, generator=gen), torch.randn(b, t, generator=gen)
    term = torch.rand(b, t, generator=gen) < 0.3
    none = torch.zeros(b, t, dtype=torch.bool)
    ret = replay_lambda_return(reward, term, none, value, 0.9, 0.8)
    disc = 0.9 * (1.0 - term[:, 1:].float())
    expected = lambda_return(reward[:, 1:].T, value.T, disc.T, 0.8).T
    torch.testing.assert_close(ret, expected)


def test_episode_last_from_flags():
    is_first = torch.tensor([[True, False, False, True, False, False]])
    is_terminal = torch.tensor([[False, False, False, False, False, True]])
    # step 2 precedes an episode start (a time-limit end); step 5 is terminal
    last = episode_last({"is_first": is_first, "is_terminal": is_terminal})
    assert last.tolist() == [[False, False, True, False, False, True]]
    own = torch.tensor([[False, True, False, False, False, False]])
    assert torch.equal(episode_last({"is_first": is_first, "is_terminal": is_terminal, "is_last": own}), own)


# ---------------------------------------------------------------- return normaliser


def test_retnorm_ema_starts_at_zero_without_debiasing(tiny_cfg):
    ac = _ac(tiny_cfg)
    assert torch.equal(ac.retnorm, torch.zeros(2))
    ret = torch.linspace(0.0, 1000.0, 101)  # P5 = 50, P95 = 950
    scale = ac._update_retnorm(ret)
    # lo = 0.01 * 50 = 0.5, hi = 0.01 * 950 = 9.5 (not the first batch's 50 / 950)
    torch.testing.assert_close(ac.retnorm, _f(0.5, 9.5))
    assert scale.shape == () and scale.item() == pytest.approx(9.0, rel=1e-5)
    scale = ac._update_retnorm(ret)
    # lo = 0.5 + 0.01 * (50 - 0.5) = 0.995, hi = 9.5 + 0.01 * (950 - 9.5) = 18.905
    torch.testing.assert_close(ac.retnorm, _f(0.995, 18.905))
    assert scale.item() == pytest.approx(17.91, rel=1e-5)
    # small returns: the limit max(1, P95 - P5) binds
    assert _ac(tiny_cfg)._update_retnorm(torch.linspace(0.0, 100.0, 101)).item() == 1.0


# ---------------------------------------------------------------- imagined losses


def _traj(ac: ActorCritic, cont: float) -> dict[str, torch.Tensor]:
    """H = 2, N = 2, reward 1 everywhere, continue ``cont``; the zero-initialised critic predicts 0."""
    gen = torch.Generator().manual_seed(1)
    h, n = 2, 2
    cont_t = torch.full((h + 1, n), cont)
    gamma = 1.0 - 1.0 / ac.cfg.horizon
    return {"feat": torch.randn(h + 1, n, F, generator=gen), "action": torch.rand(h + 1, n, A, generator=gen),
            "reward": torch.ones(h, n), "cont": cont_t, "weight": torch.cumprod(gamma * cont_t, 0) / gamma}


@pytest.mark.parametrize("twohot", ["symexp", "symlog"])
def test_imagined_loss_hand_computed(tiny_cfg, twohot):
    cfg = tiny_cfg(model__twohot=twohot)
    torch.manual_seed(0)
    ac = ActorCritic(F, A, cfg.model, dataclasses.replace(cfg.loss, horizon=2.0, lam=0.5, retnorm_limit=1e-8))
    traj = _traj(ac, cont=1.0)  # gamma = 0.5, weights [1, 0.5, 0.25]
    actor_loss, critic_loss, metrics = ac.loss(traj)
    # values 0: R_1 = r_2 = 1; R_0 = r_1 + 0.5 * (0.5 * 0 + 0.5 * R_1) = 1.25
    torch.testing.assert_close(traj["ret"], _f([1.25, 1.25], [1.0, 1.0]))
    # percentiles of [1, 1, 1.25, 1.25]: P5 = 1, P95 = 1.25 -> EMA from 0: lo = 0.01, hi = 0.0125
    scale = 0.0125 - 0.01
    assert metrics["ac/retnorm_scale"].item() == pytest.approx(scale, rel=1e-4)
    assert metrics["ac/retnorm_lo"].item() == pytest.approx(0.01, rel=1e-5)
    assert metrics["ac/retnorm_hi"].item() == pytest.approx(0.0125, rel=1e-5)
    # uniform critic and slow critic: -log p(target) = log K for any target, the slow target is 0
    # critic loss = mean over H x N of weight * (1 + slowreg) log K = 0.75 * 2 log K
    assert critic_loss.item() == pytest.approx(0.75 * 2 * math.log(K), rel=1e-5)
    # actor: advantages (R - v) / scale, scale only (no offset)
    adv = _f([1.25, 1.25], [1.0, 1.0]) / scale
    policy = ac.policy(traj["feat"][:-1])
    logpi, ent = policy.log_prob(traj["action"][:-1]), policy.entropy()
    expected = (_f([1.0], [0.5]) * (-logpi * adv - ac.cfg.actent * ent)).mean()
    assert actor_loss.item() == pytest.approx(expected.item(), rel=1e-4)
    # metrics: hand-computed statistics, all detached 0-d tensors (no host sync in the update)
    assert metrics["ac/return"].item() == pytest.approx(1.125)
    assert metrics["ac/adv_mean"].item() == pytest.approx(1.125)  # before scaling
    assert metrics["ac/adv_std"].item() == pytest.approx(0.125 * math.sqrt(4.0 / 3.0), rel=1e-5)
    assert metrics["ac/critic_mean"].item() == 0.0
    assert metrics["ac/imag_reward"].item() == 1.0
    assert metrics["ac/entropy"].item() == pytest.approx(ent.mean().item(), rel=1e-6)
    assert metrics["ac/policy_std"].item() == pytest.approx(policy.std.mean().item(), rel=1e-6)
    for key, value in metrics.items():
        assert isinstance(value, torch.Tensor) and value.shape == () and not value.requires_grad, key


def test_imagined_returns_discount_by_continue_probability(tiny_cfg):
    ac = _ac(tiny_cfg, horizon=2.0, lam=0.5)
    traj = _traj(ac, cont=0.5)  # disc = gamma * cont = 0.25
    ac.loss(traj)
    # R_1 = 1; R_0 = 1 + 0.25 * (0.5 * 0 + 0.5 * 1) = 1.125
    torch.testing.assert_close(traj["ret"], _f([1.125, 1.125], [1.0, 1.0]))


@pytest.mark.parametrize("imag_cont", ["prob", "mode"])
def test_imagine_continue_flags_and_weights(tiny_cfg, imag_cont):
    torch.manual_seed(0)
    agent = Agent(tiny_cfg(loss__imag_cont=imag_cont), action_dim=A)
    with torch.no_grad():  # continue logit log(3) everywhere: probability 0.75, mode 1
        agent.wm.cont_head.out.weight.zero_()
        agent.wm.cont_head.out.bias.fill_(math.log(3.0))
    n, horizon = 4, 3
    start = {k: v.expand(n, *v.shape[1:]).clone() for k, v in agent.wm.rssm.initial(1).items()}
    start_cont = torch.tensor([1.0, 0.0, 1.0, 1.0])
    with torch.no_grad():
        traj = agent.ac.imagine(agent.wm, start, start_cont, horizon)
    gamma = 1.0 - 1.0 / agent.cfg.loss.horizon
    steps = torch.arange(horizon + 1, dtype=torch.float32)[:, None]
    if imag_cont == "prob":  # reference con.prob(1) on every state, the start included; weight_t = gamma^t p^(t+1)
        torch.testing.assert_close(traj["cont"], torch.full((horizon + 1, n), 0.75))
        expected = (gamma**steps * 0.75 ** (steps + 1)).expand(horizon + 1, n)
    else:  # 2023 code: start flag from the data, then logit > 0
        torch.testing.assert_close(traj["cont"][0], start_cont)
        assert torch.equal(traj["cont"][1:], torch.ones(horizon, n))
        expected = gamma**steps * start_cont
    torch.testing.assert_close(traj["weight"], expected)


# ---------------------------------------------------------------- replay value loss


def test_repval_loss_hand_computed(tiny_cfg):
    ac = _ac(tiny_cfg, horizon=2.0, lam=0.5)
    feat = torch.randn(1, 4, F, generator=torch.Generator().manual_seed(2), requires_grad=True)
    reward, boot = _f([0.0, 1.0, 2.0, 3.0]), _f([10.0, 20.0, 30.0, 40.0])
    term = torch.zeros(1, 4, dtype=torch.bool)
    last = torch.tensor([[False, True, False, False]])
    critic_loss, wm_loss, metrics = ac.repval_loss(feat, reward, term, last, boot)
    assert wm_loss is None
    # uniform (zero-initialised) critic: each term costs (1 + slowreg) log K; weights 1 - last = [1, 0, 1]
    assert critic_loss.item() == pytest.approx(2 * math.log(K) * 2.0 / 3.0, rel=1e-5)
    # returns (gamma = lam = 0.5): R_2 = 3 + 0.5 * 40 = 23 (R_3 = boot_3, so the mix does not matter);
    # R_1 = 2 + 0.5 * (0.5 * 30 + 0.5 * 23) = 15.25; R_0 = 1 + 0.5 * 20 = 11 (step 1 is last)
    assert metrics["ac/repval_return"].item() == pytest.approx((11.0 + 15.25 + 23.0) / 3.0, rel=1e-6)
    assert metrics["ac/repval_loss"].item() == pytest.approx(critic_loss.item())
    critic_loss.backward()
    assert feat.grad is None  # the critic's copy never trains the features
    assert ac.critic.out.weight.grad.abs().sum() > 0


def test_repval_loss_targets_match_reference_formula(tiny_cfg):
    ac = _ac(tiny_cfg, horizon=2.0, lam=0.5)
    with torch.no_grad():
        ac.critic.out.weight.normal_()
    feat = torch.randn(2, 5, F, generator=torch.Generator().manual_seed(3), requires_grad=True)
    reward, boot = torch.randn(2, 5), torch.randn(2, 5)
    term = torch.zeros(2, 5, dtype=torch.bool)
    last = torch.zeros(2, 5, dtype=torch.bool)
    last[1, 2] = True
    critic_loss, wm_loss, _ = ac.repval_loss(feat, reward, term, last, boot, wm_grad=True)
    ret = replay_lambda_return(reward, term, last, boot, 0.5, 0.5)
    dist, slow = ac.value(feat[:, :-1].detach()), ac.value(feat[:, :-1].detach(), slow=True).mean
    weight = 1.0 - last[:, :-1].float()
    expected = ((-dist.log_prob(ret) - dist.log_prob(slow)) * weight).mean()
    assert critic_loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert wm_loss.item() == pytest.approx(expected.item(), rel=1e-5)
    wm_loss.backward()  # repval_grad: the loss reaches the posterior features
    assert feat.grad is not None and feat.grad[:, :-1].abs().sum() > 0
    assert torch.all(feat.grad[:, -1] == 0)  # the last step has no target
    assert torch.all(feat.grad[1, 2] == 0)  # nor has a last step


# ---------------------------------------------------------------- presets and wiring


def test_algo_presets_select_reference_or_paper():
    code, paper = build_config({"algo": "dreamerv3"}), build_config({"algo": "dreamerv3_2023"})
    assert (code.model.twohot, code.model.outscale_mode, code.model.actor_outscale) == ("symexp", "weight", 0.01)
    assert (code.loss.imag_cont, code.loss.repval, code.loss.repval_grad) == ("prob", 0.3, True)
    assert (paper.model.twohot, paper.model.outscale_mode, paper.model.actor_outscale) == ("symlog", "variance", 1.0)
    assert (paper.loss.imag_cont, paper.loss.repval) == ("mode", 0.0)


def _batch(b: int = 2, t: int = 6, size: int = 32) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(4)
    is_first = torch.zeros(b, t, dtype=torch.bool)
    is_first[:, 0] = True
    is_first[0, 3] = True
    is_terminal = torch.zeros(b, t, dtype=torch.bool)
    is_terminal[1, -1] = True
    return {"image": torch.randint(0, 256, (b, t, size, size, 3), dtype=torch.uint8, generator=gen),
            "action": torch.rand(b, t, A, generator=gen) * 2 - 1, "reward": torch.rand(b, t, generator=gen),
            "is_first": is_first, "is_terminal": is_terminal}


@pytest.mark.parametrize("repval_grad", [True, False])
def test_train_step_adds_repval_to_critic_and_world_model(tiny_cfg, monkeypatch, repval_grad):
    torch.manual_seed(0)
    agent = Agent(tiny_cfg(optim__warmup="0", loss__repval_grad=str(repval_grad)), action_dim=A)
    seen: dict[str, torch.Tensor] = {}

    def spy(name, fn):
        def wrapped(*args, **kwargs):
            out = fn(*args, **kwargs)
            seen[name] = out
            return out
        return wrapped

    def step_spy(name, opt):
        step = opt.step
        def wrapped(loss):
            seen[name] = loss.detach()
            return step(loss)
        return wrapped

    monkeypatch.setattr(agent.wm, "loss", spy("wm", agent.wm.loss))
    monkeypatch.setattr(agent.ac, "loss", spy("ac", agent.ac.loss))
    monkeypatch.setattr(agent.ac, "repval_loss", spy("repval", agent.ac.repval_loss))
    monkeypatch.setattr(agent.wm_opt, "step", step_spy("wm_step", agent.wm_opt))
    monkeypatch.setattr(agent.critic_opt, "step", step_spy("critic_step", agent.critic_opt))
    batch = _batch()
    metrics = agent.train_step(batch)
    rv_critic, rv_wm, _ = seen["repval"]
    scale = agent.cfg.loss.repval
    assert scale == 0.3
    torch.testing.assert_close(seen["critic_step"], seen["ac"][1].detach() + scale * rv_critic.detach())
    wm_expected = seen["wm"][0].detach() + (scale * rv_wm.detach() if repval_grad else 0.0)
    torch.testing.assert_close(seen["wm_step"], wm_expected)
    assert (rv_wm is not None) == repval_grad
    assert "ac/repval_loss" in metrics and "wm/grad_norm" in metrics
    assert torch.isfinite(torch.as_tensor(metrics["ac/repval_loss"]))


def test_train_step_without_repval(tiny_cfg, monkeypatch):
    torch.manual_seed(0)
    agent = Agent(tiny_cfg(optim__warmup="0", loss__repval="0"), action_dim=A)
    called = []
    monkeypatch.setattr(agent.ac, "repval_loss", lambda *a, **k: called.append(1))
    metrics = agent.train_step(_batch())
    assert not called and "ac/repval_loss" not in metrics

"""Tests for :mod:`mbrl.world_model`, :mod:`mbrl.actor_critic` and :class:`mbrl.agent.Agent` on a tiny model."""

from __future__ import annotations

import math

import pytest
import torch

from mbrl.actor_critic import lambda_return
from mbrl.agent import Agent

pytestmark = pytest.mark.usefixtures("single_thread")

B, T, H = 2, 8, 32
A = 2


def _batch(b: int = B, t: int = T) -> dict[str, torch.Tensor]:
    """A fixed replay batch: a diagonal stripe pattern that moves with time, per-channel offsets."""
    bi = torch.arange(b).view(b, 1, 1, 1, 1)
    ti = torch.arange(t).view(1, t, 1, 1, 1)
    y = torch.arange(H).view(1, 1, H, 1, 1)
    x = torch.arange(H).view(1, 1, 1, H, 1)
    c = torch.arange(3).view(1, 1, 1, 1, 3)
    image = (((x + y + 4 * ti + 7 * bi) // 4) % 2 * 200 + 20 * c).to(torch.uint8)
    is_first = torch.zeros(b, t, dtype=torch.bool)
    is_first[:, 0] = True
    is_terminal = torch.zeros(b, t, dtype=torch.bool)
    is_terminal[0, -1] = True
    return {"image": image.contiguous(), "action": torch.linspace(-1, 1, b * t * A).view(b, t, A),
            "reward": (torch.arange(t).float() / t).expand(b, t).contiguous(), "is_first": is_first,
            "is_terminal": is_terminal}


@pytest.fixture
def agent(tiny_cfg):
    torch.manual_seed(0)
    return Agent(tiny_cfg(optim__warmup="0", optim__lr="1e-3"), action_dim=A)


# ---------------------------------------------------------------- world model


def test_world_model_loss_finite_scalar_and_metrics(agent):
    batch = _batch()
    assert batch["image"].shape == (B, T, H, H, 3) and batch["image"].dtype == torch.uint8
    loss, post, metrics = agent.wm.loss(batch)
    assert loss.shape == () and torch.isfinite(loss)
    assert set(metrics) >= {"wm/loss", "wm/rec", "wm/rew", "wm/con", "wm/kl"}
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 and math.isfinite(v) for v in metrics.values())
    assert float(metrics["wm/loss"]) == pytest.approx(loss.item(), rel=1e-5)
    assert metrics["wm/rec"] > 0 and metrics["wm/kl"] >= 0
    cfg = agent.cfg.model
    assert post["deter"].shape == (B, T, cfg.deter)
    assert post["stoch"].shape == (B, T, cfg.stoch, cfg.classes)
    loss.backward()
    for name, module in [("encoder", agent.wm.encoder), ("decoder", agent.wm.decoder),
                         ("rssm.post_net", agent.wm.rssm.post_net), ("reward", agent.wm.reward_head.out),
                         ("cont", agent.wm.cont_head)]:
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        assert grads and sum(g.abs().sum() for g in grads) > 0, name


def test_world_model_loss_falls_on_fixed_batch(agent):
    batch = _batch()
    torch.manual_seed(1)
    losses = []
    for _ in range(30):
        loss, _, _ = agent.wm.loss(batch)
        agent.wm_opt.step(loss)
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.8 * losses[0], losses


# ---------------------------------------------------------------- lambda returns


def test_lambda_return_hand_computed():
    reward = torch.tensor([[1.0], [2.0]])  # r_1, r_2
    value = torch.tensor([[0.5], [1.0], [3.0]])  # v_0, v_1, v_2
    disc = torch.tensor([[0.9], [0.8]])
    ret = lambda_return(reward, value, disc, lam=0.5)
    # R_1 = 2 + 0.8 * 3 = 4.4; R_0 = 1 + 0.9 * (0.5 * 1.0 + 0.5 * 4.4) = 3.43
    torch.testing.assert_close(ret, torch.tensor([[3.43], [4.4]]))
    # lam = 0: one-step TD targets r_{t+1} + disc * v_{t+1}
    torch.testing.assert_close(lambda_return(reward, value, disc, lam=0.0), torch.tensor([[1.9], [4.4]]))


def test_lambda_return_lam_one_is_discounted_sum():
    gen = torch.Generator().manual_seed(0)
    h, n = 6, 4
    reward, value = torch.randn(h, n, generator=gen), torch.randn(h + 1, n, generator=gen)
    disc = 0.99 * (torch.rand(h, n, generator=gen) > 0.2).float()
    ret = lambda_return(reward, value, disc, lam=1.0)
    assert ret.shape == (h, n)
    for t in range(h):
        expected, scale = torch.zeros(n), torch.ones(n)
        for k in range(t, h):
            expected += scale * reward[k]
            scale = scale * disc[k]
        expected += scale * value[h]
        torch.testing.assert_close(ret[t], expected)


# ---------------------------------------------------------------- actor-critic


def _start(agent):
    batch = _batch()
    with torch.no_grad():
        _, post, _ = agent.wm.loss(batch)
    start = {k: v.flatten(0, 1) for k, v in post.items()}
    start_cont = 1.0 - batch["is_terminal"].flatten().float()
    return start, start_cont


@pytest.mark.parametrize("grad", ["reinforce", "backprop"])
def test_actor_critic_imagine_and_loss(tiny_cfg, grad):
    torch.manual_seed(0)
    # imag_cont=mode (2023 code): start flags from the data; the default (prob) is tested in test_actor_critic.py
    agent = Agent(tiny_cfg(loss__actor_grad=grad, loss__imag_cont="mode"), action_dim=A)
    start, start_cont = _start(agent)
    horizon, n = 5, B * T
    with torch.set_grad_enabled(grad == "backprop"):
        traj = agent.ac.imagine(agent.wm, start, start_cont, horizon)
    feat_dim = agent.wm.rssm.feat_dim
    assert traj["feat"].shape == (horizon + 1, n, feat_dim)
    assert traj["action"].shape == (horizon + 1, n, A)
    assert traj["reward"].shape == (horizon, n)
    assert traj["cont"].shape == traj["weight"].shape == (horizon + 1, n)
    torch.testing.assert_close(traj["weight"][0], start_cont)  # weight_0 = cont_0
    assert torch.all(traj["weight"][1:] <= traj["weight"][:-1] + 1e-6)  # cumulative discount never grows
    assert traj["weight"][0, T - 1].item() == 0.0  # the terminal start state has no weight

    actor_loss, critic_loss, metrics = agent.ac.loss(traj)
    assert actor_loss.shape == critic_loss.shape == ()
    assert torch.isfinite(actor_loss) and torch.isfinite(critic_loss)
    assert actor_loss.requires_grad and critic_loss.requires_grad
    assert all(math.isfinite(v) for v in metrics.values())
    assert metrics["ac/retnorm_scale"] >= agent.cfg.loss.retnorm_limit
    actor_loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.ac.actor.parameters())
    assert all(p.grad is None for p in agent.ac.critic.parameters())  # actor loss does not train the critic


def test_slow_critic_ema(agent):
    rate = agent.cfg.loss.slow_rate
    slow_w, fast_w = agent.ac.slow_critic.out.weight, agent.ac.critic.out.weight
    assert not slow_w.requires_grad
    assert torch.equal(slow_w, fast_w)  # starts as a copy
    with torch.no_grad():
        fast_w.fill_(1.0)
        slow_w.fill_(-1.0)
        hid_before = agent.ac.slow_critic.hidden[0][0].weight.clone()
        agent.ac.critic.hidden[0][0].weight.add_(2.0)
    agent.ac.update_slow_critic()
    torch.testing.assert_close(slow_w, torch.full_like(slow_w, -1.0 + 2.0 * rate))  # -1 + rate * (1 - -1)
    torch.testing.assert_close(agent.ac.slow_critic.hidden[0][0].weight, hid_before + 2.0 * rate)
    assert torch.equal(fast_w, torch.ones_like(fast_w))  # the critic itself is untouched


def test_train_step_updates_everything(agent):
    batch = _batch()
    before = {k: v.detach().clone() for k, v in agent.named_parameters()}
    metrics = agent.train_step(batch)
    for key in ("wm/loss", "wm/grad_norm", "ac/actor_loss", "ac/critic_loss", "ac/actor_grad_norm",
                "ac/critic_grad_norm"):
        assert key in metrics and math.isfinite(metrics[key]), key
    changed = {k for k, v in agent.named_parameters() if not torch.equal(v, before[k])}
    for prefix in ("wm.encoder.", "wm.decoder.", "wm.rssm.", "ac.actor.", "ac.critic.", "ac.slow_critic."):
        assert any(k.startswith(prefix) for k in changed), prefix


# ---------------------------------------------------------------- acting


def test_act_shapes_bounds_and_modes(agent):
    n = 16
    torch.manual_seed(0)
    image = torch.randint(0, 256, (n, H, H, 3), dtype=torch.uint8)
    first = torch.ones(n, dtype=torch.bool)
    with torch.no_grad():  # make the policy wide so that some train samples need clipping
        agent.ac.actor.out.bias[A:].fill_(10.0)
    state = agent.initial_state(n)
    assert state[1].shape == (n, A)

    torch.manual_seed(3)
    a_train, (latent, prev) = agent.act(image, first, state, mode="sample")
    assert a_train.shape == (n, A)
    assert torch.all(a_train.abs() <= 1.0)
    assert torch.equal(prev, a_train)
    assert latent["deter"].shape == (n, agent.cfg.model.deter)

    torch.manual_seed(3)
    a_eval, (latent_eval, _) = agent.act(image, first, state, mode="mode")
    torch.manual_seed(3)
    a_eval2, _ = agent.act(image, first, state, mode="mode")
    assert torch.equal(a_eval, a_eval2)  # deterministic given the RNG state
    assert torch.equal(latent_eval["stoch"], latent["stoch"])  # same posterior sample as the train call
    assert not torch.allclose(a_eval, a_train)  # train samples around the mean
    # eval takes the policy mean of the new latent
    mean = agent.ac.policy(agent.wm.rssm.features(latent_eval)).mean
    torch.testing.assert_close(a_eval, mean.clamp(-1, 1))

    with pytest.raises(ValueError, match="policy mode 'train' is not one of sample, mode"):
        agent.act(image, first, state, mode="train")

    # the next call continues from the returned state (not the initial one)
    a_next, _ = agent.act(image, torch.zeros(n, dtype=torch.bool), (latent, prev), mode="mode")
    assert a_next.shape == (n, A) and torch.all(a_next.abs() <= 1.0)

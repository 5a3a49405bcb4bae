"""Monte-Carlo returns-to-go per episode, with the tail rules of the methods that use them."""

from __future__ import annotations

import numpy as np
import torch
from scipy.signal import lfilter


def discounted_returns_to_go(
    rewards: np.ndarray,
    episode_ends: np.ndarray,
    terminations: np.ndarray,
    gamma: float,
    *,
    timeout_tail: bool = False,
    failure_reward: float | None = None,
    reward_scale: float = 1.0,
    reward_bias: float = 0.0,
) -> np.ndarray:
    """G_t = r_t + gamma * G_{t+1} inside each episode, with G = 0 after the last step by default.

    rewards, terminations: flat per-transition arrays; episode_ends: exclusive end index of each
    episode, in order, the last one equal to len(rewards).

    timeout_tail: an episode that did not terminate (time limit, or the dataset ended) gets its last
    reward replaced by r_T / (1 - gamma), the infinite-horizon tail of "First Imitate, then Improve"
    (Jelley et al., `compute_returns_to_go` in AdamJelley/EfficientOfflineRL).

    failure_reward: Cal-QL's sparse-reward rule (nakamotoo/Cal-QL `calc_return_to_go`): an episode whose
    rewards all equal the failure reward never succeeded, and every step gets failure_reward / (1 - gamma).

    reward_scale, reward_bias: returns of r * reward_scale + reward_bias (the agent's reward transform); the
    failure rule compares the stored rewards with failure_reward and returns its transformed value.
    """
    stored = np.asarray(rewards)
    rewards = stored.astype(np.float64) * reward_scale + reward_bias
    terminations = np.asarray(terminations, dtype=bool)
    # Compare in the rewards' own precision: float32(-0.1) != -0.1 once widened to float64.
    failure = failure_reward
    if failure_reward is not None and np.issubdtype(stored.dtype, np.floating):
        failure = stored.dtype.type(failure_reward)
    returns = np.empty_like(rewards)
    start = 0
    for end in np.asarray(episode_ends, dtype=np.int64):
        episode = rewards[start:end].copy()
        if failure_reward is not None and np.all(stored[start:end] == failure):
            returns[start:end] = (failure_reward * reward_scale + reward_bias) / (1.0 - gamma)
            start = end
            continue
        if timeout_tail and not terminations[end - 1]:
            episode[-1] = episode[-1] / (1.0 - gamma)
        # Reverse-time IIR filter: y_t = x_t + gamma * y_{t+1}.
        returns[start:end] = lfilter([1.0], [1.0, -gamma], episode[::-1])[::-1]
        start = end
    return returns


def discounted_suffix_sums(
    x: torch.Tensor, last: torch.Tensor, gamma: float, max_length: int | None = None
) -> torch.Tensor:
    """y_t = x_t + gamma y_{t+1} inside each episode (y_t = x_t where `last`), on x's device.

    The device counterpart of `discounted_returns_to_go`'s filter, for returns computed during training
    (soft Monte-Carlo returns, online episodes). A segmented parallel scan: after the round with offset d
    every y_t sums its next 2d steps, and the carried coefficient (a product of gammas, 0 across an
    episode end) stops it at the episode's end; ceil(log2(max_length)) rounds of a few vector operations.
    """
    n = len(x)
    y, a = x.clone(), torch.full_like(x, gamma).masked_fill(last, 0.0)
    d = 1
    while d < min(max_length or n, n):
        y = torch.cat([y[:-d] + a[:-d] * y[d:], y[-d:]])
        a = torch.cat([a[:-d] * a[d:], torch.zeros_like(a[-d:])])
        d *= 2
    return y

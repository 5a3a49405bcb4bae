"""EDAC (An et al., NeurIPS 2021): SAC-N whose critics are also pushed to disagree on their action gradients.

The update is SAC-N's (zoo.agents.sac: temperature -> actor -> critics, every loss from the networks as they
were at the start of the step) with one extra critic term, the ensemble gradient diversity:

    L_Q = sum_i MSE(Q_i(s, a), y) + eta * ES,
    ES  = mean_b 1/(N - 1) sum_{i != j} <g_i, g_j>,   g_i = grad_a Q_i(s, a) / (||grad_a Q_i(s, a)|| + 1e-10),

at the dataset pairs (s, a) only, y the SAC-N target with the entropy backup. Summing the ensemble's
outputs and differentiating with respect to a per-member copy of the action gives every member's own
grad_a Q_i in one backward (create_graph=True, so ES is differentiated again by the critic step); the same
forward serves the TD loss. SAC-N is EDAC with eta = 0 (snu-mllab/EDAC: `--eta` < 0 turns it off).

Differences from the reference trainers, all small:
- CORL (algorithms/offline/edac.py) steps alpha first and uses the new alpha, then builds the actor loss
  after the alpha step and the critic loss after the actor step (a' ~ the updated actor); here, as in the
  official snu-mllab trainer, every loss comes from the pre-update networks and the pre-update alpha, and
  one policy sample on s serves temperature and actor (CORL draws a separate no-grad sample for alpha).
- The official trainer draws a' without reparameterisation; under no_grad that is the same distribution.
- Time-limit ends are bootstrapped transitions (zoo convention); D4RL's qlearning_dataset drops them and
  Jelley et al.'s fork treats them as terminal.
- `max_q_backup` (official, pen-cloned only) and `deterministic_backup` are not implemented.

Populations (zoo.agents.population): member p's critics get their own action copies, so the one backward
gives grad_a Q_{p,i} of each member's critic i at its own (s, a); the cosines are taken among member p's N
critics only, and member p's ES is weighted by its own eta (a (P,) tensor when members differ; a member with
eta = 0 then contributes 0 * ES_p, SAC-N's loss).

Default networks are the paper's: 3 hidden layers of 256 for actor and critics, hidden biases 0.1, output
layers U(+-3e-3) (critics) and U(+-1e-3) (actor's mu and log sigma), log sigma clipped to [-5, 2]; no
observation normalisation (official and CORL), which the imitate-then-improve key `edac-mc` turns on.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from zoo.agents.base import Batch
from zoo.agents.losses import ensemble_mse
from zoo.agents.sac import SAC, SACPolicy
from zoo.data.dataset import OfflineDataset
from zoo.nn import SharedQ
from zoo.nn.members import per_member

# The paper's networks (snu-mllab/EDAC scripts/sac.py; CORL's EDAC), below any policy_kwargs the user gives.
EDAC_POLICY_DEFAULTS: dict[str, Any] = dict(
    net_arch=(256, 256, 256),
    n_critics=10,
    critic_init="edac",
    critic_output_bound=3e-3,
    actor_init="edac",
    actor_output_bound=1e-3,
    log_std_bounds=(-5.0, 2.0),
)


class EDAC(SAC):
    """EDAC with CORL's defaults (N = 10, eta = 1.0); per-dataset N and eta are in hyperparams/edac.yml.

    :param dataset: the OfflineDataset to learn from
    :param eta: weight of the ensemble gradient-diversity term (0: SAC-N)
    :param normalize_observations: standardise observations (off in the official code and CORL's EDAC;
        on in Jelley et al.'s fork, the `edac-mc` key)
    :param policy_kwargs: see SACPolicy; EDAC's defaults (3 x 256 hidden layers, n_critics 10, "edac"
        initialisation with output bounds 3e-3 / 1e-3, log sigma in [-5, 2]) apply where a key is absent
    Other arguments: see SAC and OfflineAlgorithm (pretrain="soft-imitate" is the first-imitate recipe).
    """

    default_policy_kwargs: ClassVar[dict[str, Any]] = EDAC_POLICY_DEFAULTS

    def __init__(
        self,
        dataset: OfflineDataset | None = None,
        policy: str | type[SACPolicy] = "MlpPolicy",
        *,
        eta: float = 1.0,
        normalize_observations: bool = False,
        policy_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        n_critics = {**self.default_policy_kwargs, **(policy_kwargs or {})}["n_critics"]
        if eta < 0:
            raise ValueError(
                f"eta weighs the gradient-diversity penalty and must be >= 0 (0 is SAC-N), got {eta}."
            )
        if eta > 0 and n_critics < 2:
            raise ValueError(
                f"The gradient-diversity term (eta={eta}) compares pairs of critics, "
                f"but n_critics={n_critics}: "
                "use policy_kwargs={'n_critics': N} with N >= 2, or eta=0 for SAC-N."
            )
        self.eta = float(eta)
        super().__init__(
            dataset,
            policy,
            normalize_observations=normalize_observations,
            policy_kwargs=policy_kwargs,
            **kwargs,
        )

    # ------------------------------------------------------------------ losses

    @property
    def sac_n(self) -> bool:
        """eta = 0 for the whole agent (a population whose members' eta differ always computes ES)."""
        return not isinstance(self.eta, torch.Tensor) and self.eta == 0.0

    def q_and_diversity(
        self, observations: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Q_i(s, a) of every critic, (N, batch), and the diversity term ES, from one forward and one
        backward; a population's (P, B, d) inputs give (P, N, batch) and each member's own ES, (P,)."""
        critic = self.critic
        n = critic.n_critics
        # Each critic gets its own copy of the action, so d(sum_i Q_i)/d(copy_i) = grad_a Q_i:
        # ([P,] N, B, |A|).
        member_actions = actions.detach().unsqueeze(-3).repeat_interleave(n, dim=-3).requires_grad_(True)
        states = observations.unsqueeze(-3).expand(*member_actions.shape[:-1], observations.shape[-1])
        # The critics' ensemble on per-critic inputs: (N, B, d), or (P * N, B, d) for a population's P * N
        # ensemble members (member p's critics are ensemble members p * N ... p * N + N - 1).
        rows = torch.cat([states, member_actions], dim=-1).flatten(0, -3)
        out = critic.q_head(critic.backbone(rows)) if isinstance(critic, SharedQ) else critic.net(rows)
        q = out.squeeze(-1).view(*member_actions.shape[:-1])
        (grads,) = torch.autograd.grad(q.sum(), member_actions, create_graph=True)  # ([P,] N, batch, |A|)
        # Unit length (+1e-10, as the official code), then all pairwise cosines per sample:
        # ([P,] batch, N, N).
        grads = grads / (grads.norm(dim=-1, keepdim=True) + 1e-10)
        grads = grads.transpose(-3, -2)
        cosines = torch.matmul(grads, grads.transpose(-1, -2))
        off_diagonal = 1.0 - torch.eye(n, device=cosines.device, dtype=cosines.dtype)
        diversity = (cosines * off_diagonal).sum(dim=(-2, -1)).mean(-1) / (n - 1)
        return q, diversity

    def q_and_penalty(
        self, observations: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Q_i(s, a) and eta * ES (summed over a population's members) from one forward (SAC-N's when
        eta = 0)."""
        if self.sac_n:
            return super().q_and_penalty(observations, actions)
        q, diversity = self.q_and_diversity(observations, actions)
        return q, (per_member(self.eta, diversity) * diversity).sum()

    def critic_loss(self, batch: Batch, alpha: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """sum_i MSE(Q_i(s, a), y) + eta * ES (summed over a population's members, each with its own eta);
        returns (loss, statistics)."""
        if self.sac_n:  # SAC-N
            return super().critic_loss(batch, alpha)
        # The SAC-N target: r + gamma (1 - terminated) (min_i Q'_i(s', a') - alpha log pi(a'|s')).
        target = self.td_target(batch, alpha)
        # One forward of the ensemble at (s, a) serves the TD loss and the gradient-diversity term.
        q, diversity = self.q_and_diversity(batch.observations, batch.actions)
        td_loss = ensemble_mse(q, target)
        return td_loss + (per_member(self.eta, diversity) * diversity).sum(), {
            "q_mean": q.mean(),
            "critic_td_loss": td_loss,
            "diversity_loss": diversity,
        }


__all__ = ["EDAC", "EDAC_POLICY_DEFAULTS"]

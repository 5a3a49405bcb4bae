"""Pretraining recipes: what an agent does in its first `pretrain_steps` gradient steps.

A recipe is a component an agent takes (`pretrain="imitate"`), not a copy of the agent: it may add
columns to the agent's replay (e.g. Monte-Carlo returns) and replaces the agent's update while the
pretraining phase lasts. Pretraining steps count inside `learn`'s total, as in the official code.

The contract: a recipe asks of an agent only what `RecipeAgent` (and, for the SAC family, `SoftRecipeAgent`)
lists, of a dataset only what `RecipeDataset` lists, and declares the algorithm families it serves.

Populations (zoo.agents.population): every loss here serves an ordinary agent and a population of P agents
with one code path. Batch columns carry a leading member axis ((P, B, d) instead of (B, d)), critics return
(P, C, B) instead of (C, B) (the critic axis second to last), and a loss is the sum over members of each
member's mean (`.mean(-1)` over the batch, then `.sum()`: for an ordinary agent the same number as `.mean()`).
A recipe float that differs between members is a (P,) tensor attribute (set by the population) and enters
the losses through `per_member`. A recipe float that chooses a branch or a phase is listed in the recipe's
`population_shared`; a choice that a float makes (td_weight 0: no TD term) is a boolean attribute, which the
population requires to agree. Columns whose values depend on a member's settings (Monte-Carlo returns with
that member's gamma, soft returns with that member's actor) are one column per member (`member_column`),
member k reading its own (`own_values`).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, ClassVar, Protocol

import torch

from zoo.agents.replay import Batch, Replay
from zoo.data.returns import discounted_suffix_sums
from zoo.nn import SharedQ
from zoo.nn.members import per_member

Stats = dict[str, torch.Tensor]


def _varies(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() == 1


def member_setting(agent: Any, name: str, k: int) -> Any:
    """Member k's value of the agent's setting `name`: the agent's own value where the members agree; where
    they differ (a population's (P,) tensor), the exact number member k was built with (its recorded
    hyperparameters: the tensor holds float32 roundings, and a gamma of 0.9 must stay 0.9 in the returns)."""
    value = getattr(agent, name)
    return float(agent.member_hyperparameters[k][name]) if _varies(value) else value


def member_values(agent, name: str) -> float | torch.Tensor:
    """The agent's float setting `name`: a float, or, in a population whose members differ in it, the (P,)
    float64 tensor of the exact values the members were built with (computed with in float64 and rounded
    once where a loss uses them, as a population of one rounds its Python float). Read from the members'
    recorded settings (the population's own attribute holds them as float32)."""
    recorded = getattr(agent, "member_hyperparameters", None)
    if not getattr(agent, "is_population", False) or not recorded:
        return float(getattr(agent, name))
    exact = [float(settings[name]) for settings in recorded]
    if all(value == exact[0] for value in exact):
        return exact[0]
    return torch.tensor(exact, dtype=torch.float64, device=agent.device)


def member_column(agent: Any, compute: Any, *names: str) -> torch.Tensor:
    """A per-transition column computed from the agent's settings `names`: compute(*values), (N,).

    In a population whose members differ in one of those settings, each member gets its own column,
    computed with its own values: (N, P), member k's in column k; a batch then holds (P, B, P), and
    `own_values` gives member k the values of column k."""
    if not any(_varies(getattr(agent, name)) for name in names):
        return compute(*(getattr(agent, name) for name in names))
    columns = [compute(*(member_setting(agent, name, k) for name in names)) for k in range(agent.n_members)]
    return torch.stack(columns, dim=-1)


def own_values(column: torch.Tensor) -> torch.Tensor:
    """A batch's column as its member reads it: (B,) or (P, B) as drawn; one column per member, (P, B, P),
    gives member k its own column k: (P, B)."""
    if column.dim() == 3:
        return column.diagonal(dim1=0, dim2=2).transpose(0, 1)
    return column


def per_member_mse(q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Each member's sum over its critics of MSE(Q_i, target): q (C, B) and target (B,) give a scalar, a
    population's (P, C, B) and (P, B) give (P,). Summed, it is zoo.agents.losses.ensemble_mse."""
    return (q - target.unsqueeze(-2)).pow(2).mean(dim=-1).sum(dim=-1)


def mixes_td(td_weight: float | torch.Tensor) -> bool:
    """Whether a recipe's critic loss mixes in the TD loss (td_weight > 0). A population's td_weight is a
    (P,) tensor only when its members' values differ, and they may differ only when all are > 0 (the
    recipe's `td_weight_is_zero` must agree)."""
    return isinstance(td_weight, torch.Tensor) or td_weight > 0.0


def normalised_mix(first: torch.Tensor, second: torch.Tensor, weight: Any) -> torch.Tensor:
    """(1 - lambda) L_1 / sg(L_1) + lambda L_2 / sg(L_2) per member (each loss divided by its own detached
    value, so the mix is scale-free: its gradient is the lambda-weighted mix of the relative gradients),
    summed over a population's members; `weight` is lambda, a float or a population's (P,) tensor."""
    weight = per_member(weight, first)
    return ((1 - weight) * first / first.detach() + weight * second / second.detach()).sum()


class RecipeAgent(Protocol):
    """What a pretraining recipe may ask of an agent (TD3 and SAC families alike)."""

    family: str  # "td3" or "sac"
    policy: Any  # its `critic` attribute (recipes check the critic's kind)
    actor: torch.nn.Module
    critic: torch.nn.Module
    gamma: float
    tau: float
    reward_scale: float
    reward_bias: float
    replay: Replay  # its columns: read `column`, write `write_column`
    n_members: int  # 1, or the size of a population (zoo.agents.population)
    is_population: bool
    member_hyperparameters: list[dict[str, Any]] | None  # a population's members' settings, exact

    @property
    def n_updates(self) -> int: ...
    @property
    def pretrain_until(self) -> int: ...
    def autocast(self) -> AbstractContextManager: ...
    def sample(self, batch_size: int) -> Batch: ...
    def transform_rewards(self, rewards: Any) -> Any: ...
    def critic_loss(self, batch: Batch, *args: Any) -> tuple[torch.Tensor, Stats]: ...
    def td_target(self, batch: Batch, *args: Any) -> torch.Tensor: ...
    def rl_update(self, batch: Batch, critic_loss: torch.Tensor | None = None) -> Any: ...
    def critic_step(self, loss: torch.Tensor) -> None: ...
    def actor_step(self, loss: torch.Tensor) -> None: ...
    def update_targets(self) -> None: ...
    def record(self, **stats: torch.Tensor) -> None: ...


class SoftRecipeAgent(RecipeAgent, Protocol):
    """The SAC family's extra: its temperature, its temperature step, its soft TD target and critic term."""

    @property
    def alpha(self) -> torch.Tensor: ...
    def alpha_step(self, log_prob: torch.Tensor) -> None: ...
    def td_target(self, batch: Batch, alpha: torch.Tensor) -> torch.Tensor: ...  # type: ignore[override]
    def q_and_penalty(
        self, observations: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


class RecipeDataset(Protocol):
    """What a recipe may ask of a dataset: its size and device, returns-to-go, the per-episode source view."""

    device: torch.device

    def __len__(self) -> int: ...
    def returns_to_go(self, gamma: float, **options: Any) -> torch.Tensor: ...
    @property
    def source_episodes(self) -> Any: ...  # zoo.data.dataset.SourceEpisodes


class Pretraining:
    """Base of the recipes: `families` lists the agent families (RecipeAgent.family) a recipe serves."""

    key: ClassVar[str] = ""
    families: ClassVar[tuple[str, ...]] = ()
    # Float options that choose a phase or a branch: the members of a population must agree on them.
    population_shared: ClassVar[frozenset[str]] = frozenset()

    def check(self, agent: RecipeAgent) -> None:
        """Refuse, at construction, an agent whose networks the recipe cannot train."""
        if agent.family not in self.families:
            raise ValueError(self.wrong_family(agent))

    def wrong_family(self, agent: RecipeAgent) -> str:
        return (
            f"pretrain='{self.key}' serves the {'/'.join(self.families)} family, not {type(agent).__name__}."
        )

    def columns(self, agent: RecipeAgent, dataset: RecipeDataset) -> dict[str, torch.Tensor]:
        """Extra per-transition columns the recipe's losses read from batches."""
        return {}

    def update(self, agent: RecipeAgent, batch: Batch) -> None:
        raise NotImplementedError

    def finish(self, agent: RecipeAgent) -> None:
        """Called once when the agent's own losses take over."""


class Imitation(Pretraining):
    """First imitate, then improve (Jelley et al., 2024; AdamJelley/EfficientOfflineRL `--pretrain AC`).

    Every pretraining step: the actor regresses onto the dataset actions (BC, no policy delay) and both
    critics regress onto the Monte-Carlo return-to-go of the dataset (s, a), with the timeout tail
    r_T / (1 - gamma); targets follow every step. With td_weight = lambda > 0 the critic loss mixes in
    the TD loss, each part divided by its own detached value (scale-free, as the official code does):
    (1 - lambda) L_MC / sg(L_MC) + lambda L_TD / sg(L_TD).

    Populations: each member's losses on its own batch, summed; lambda may differ per member as long as all
    members mix in the TD loss or none does (lambda = 0 is the plain, unnormalised MC loss and draws no TD
    target noise: `td_weight_is_zero` must agree); members whose gamma or reward transform differ get their
    own return columns.
    """

    key = "imitate"
    families = ("td3",)

    def __init__(self, td_weight: float = 0.0):
        if not 0.0 <= td_weight <= 1.0:
            raise ValueError(
                f"The TD weight (lambda) of imitation pretraining lies in [0, 1], got {td_weight}."
            )
        self.td_weight = td_weight
        # A branch (no TD term at all): the members of a population must agree on it (compared as a bool).
        self.td_weight_is_zero = td_weight == 0.0

    def wrong_family(self, agent: RecipeAgent) -> str:
        return (
            f"pretrain='imitate' trains a deterministic TD3-family actor and twin critics; "
            f"{type(agent).__name__} is not one (use it with td3 or td3bc)."
        )

    def columns(self, agent: RecipeAgent, dataset: RecipeDataset) -> dict[str, torch.Tensor]:
        def returns(gamma: float, reward_scale: float, reward_bias: float) -> torch.Tensor:
            return dataset.returns_to_go(
                gamma, timeout_tail=True, reward_scale=reward_scale, reward_bias=reward_bias
            )

        return {"returns_to_go": member_column(agent, returns, "gamma", "reward_scale", "reward_bias")}

    def critic_loss(self, agent: RecipeAgent, batch: Batch) -> tuple[torch.Tensor, Stats]:
        """sum_i MSE(Q_i(s, a), G) [loss-normalised mix with the agent's TD loss, per member]; (loss,
        statistics). The TD part is the agent's TD target against the same Q_i(s, a) (TD3's critic loss)."""
        q = agent.critic(batch.observations, batch.actions)
        mc_loss = per_member_mse(q, own_values(batch.returns_to_go))
        if not mixes_td(self.td_weight):
            return mc_loss.sum(), {}
        td_loss = per_member_mse(q, agent.td_target(batch))
        return normalised_mix(mc_loss, td_loss, self.td_weight), {}

    def actor_loss(self, agent: RecipeAgent, batch: Batch) -> tuple[torch.Tensor, Stats]:
        """MSE(pi(s), a) (summed over a population's members); (loss, statistics)."""
        error = (agent.actor(batch.observations) - batch.actions).pow(2)
        return error.flatten(-2).mean(-1).sum(), {}

    def update(self, agent: RecipeAgent, batch: Batch) -> None:
        """A critic step on the Monte-Carlo loss, an actor step on BC (no delay), then the targets."""
        with agent.autocast():
            critic_loss, critic_stats = self.critic_loss(agent, batch)
        agent.critic_step(critic_loss)
        with agent.autocast():
            actor_loss, actor_stats = self.actor_loss(agent, batch)
        agent.actor_step(actor_loss)
        agent.update_targets()
        agent.record(
            **critic_stats, **actor_stats, pretrain_critic_loss=critic_loss, pretrain_actor_loss=actor_loss
        )


class TransitionPrediction(Pretraining):
    """Pretraining a shared Q-network (Park, Park & Lee, 2025; daisophila/PSQN TD3_BC_Pretrain.py).

    While the phase lasts, each critic's backbone and transition head regress onto the normalised next
    state, sum_i MSE(g_i(h_i(s, a)), s'), in place of the TD loss; the rest of the update runs as usual
    (the official code keeps training the actor on the untrained Q head and soft-updating the targets,
    and one Adam optimizer serves both phases). Then the TD loss takes over and fine-tunes the backbone,
    or, with freeze_backbone=True (the paper's frozen variant, App. F), trains only the Q heads.
    Any critic-based agent with shared-Q critics takes it: the TD3 family (the paper's TD3+BC and TD3)
    and the SAC family (CQL, Cal-QL: the paper's CQL variant; there the actor and temperature keep
    training during the phase too, as TD3's actor does).
    """

    key = "transition"
    families = ("td3", "sac")

    def __init__(self, freeze_backbone: bool = False):
        self.freeze_backbone = freeze_backbone

    def check(self, agent: RecipeAgent) -> None:
        super().check(agent)
        if not isinstance(agent.policy.critic, SharedQ):
            raise ValueError(
                "pretrain='transition' needs critics with a transition head: pass "
                "policy_kwargs={'shared_q': True} (the psqn key does)."
            )

    def critic_loss(self, agent: RecipeAgent, batch: Batch) -> tuple[torch.Tensor, Stats]:
        """sum_i MSE(g_i(h_i(s, a)), s') (summed over a population's members too); (loss, statistics)."""
        predicted = agent.critic.predict_next_observation(batch.observations, batch.actions)
        target = batch.next_observations.unsqueeze(-3)  # (…, 1, B, obs) against (…, C, B, obs)
        return (predicted - target).pow(2).mean(dim=(-2, -1)).sum(), {}

    def update(self, agent: RecipeAgent, batch: Batch) -> None:
        """The agent's own update with this critic objective in place of its TD loss."""
        with agent.autocast():
            loss, stats = self.critic_loss(agent, batch)
        agent.record(**stats)
        agent.rl_update(batch, critic_loss=loss)

    def finish(self, agent: RecipeAgent) -> None:
        """The frozen variant: no backbone weight learns from here on (a population's stacked backbone
        holds every member's, so all members freeze at once, as they all switch at the same update)."""
        if self.freeze_backbone:
            agent.critic.backbone.requires_grad_(False)


PRETRAINING: dict[str, type[Pretraining]] = {
    Imitation.key: Imitation,
    TransitionPrediction.key: TransitionPrediction,
}


class SoftImitation(Pretraining):
    """First imitate, then improve for the maximum-entropy (SAC-family, EDAC) agents (Jelley et al., 2024;
    AdamJelley/EfficientOfflineRL algorithms/edac.py `--pretrain softAC`).

    Phase A, the first `bc_fraction` of the pretraining steps: the temperature update of the agent and an
    alpha-entropy-regularised BC actor, L_pi = mean(alpha log pi(a~|s) - log pi(a_data|s)), alpha taken after
    this step's temperature update as in the official code (which draws a separate no-grad sample for the
    temperature loss; here one sample serves both); critics untouched.
    At the switch, once: soft Monte-Carlo returns of every dataset transition with the BC actor and alpha,
    G_t = sum_k gamma^k r_{t+k} + alpha sum_{k>=1} gamma^k H_{t+k}, H = -log pi(a~|s), a~ ~ pi(.|s) sampled
    at each dataset state; an episode that did not terminate (time limit, or the dataset ended) has its last
    reward and its last entropy bonus divided by (1 - gamma). They fill the table's `soft_returns_to_go`
    column in place (zeros until then).
    Phase B, the rest: the critics regress onto G, mean over members and batch of (Q_i(s, a) - G)^2, plus
    eta * ES for EDAC (the diversity term is not loss-normalised, as in the official code); actor and
    temperature frozen; target critics soft-updated every step. With td_weight = lambda > 0 the Monte-Carlo
    part mixes with the agent's own soft TD loss, each divided by its detached value like `Imitation`.
    Then the agent's own update takes over.

    Populations: each member's losses on its own batch, summed; the soft returns depend on each member's
    actor, temperature and gamma, so a population of P > 1 keeps one column per member (member k reads its
    own). td_weight may differ per member when all mix in the TD loss or none does (`td_weight_is_zero`);
    bc_fraction picks the phase switch and is shared.

    Length: the official script pretrains `epoch <= pretrain_epochs` epochs of 1000 updates with BC while
    `epoch < pretrain_epochs * 0.5`, so `--pretrain_epochs 20` gives 10,000 BC updates and 11,000 critic
    updates (the `<=` counts one epoch more than asked). Here pretrain_steps counts exactly: 20,000 with
    bc_fraction 0.5 is 10,000 + 10,000; pretrain_steps=21_000, bc_fraction=10/21 reproduces the script.

    Subsets: returns run over complete source episodes (as `OfflineDataset.returns_to_go`); with a
    transition subset (fraction < 1, "transitions") the entropy bonus of a state not in the subset is that
    of the next kept state of its episode (else of the last kept one before it): its observation is gone.
    Soft returns are recomputed from the (frozen) actor whenever the table is rebuilt in phase B (a new
    `learn` call, or a loaded agent), so a resumed run draws fresh a~.

    :param bc_fraction: share of pretrain_steps spent on the BC actor, in (0, 1) (official: 0.5)
    :param td_weight: lambda of the Monte-Carlo / TD mix of phase B, in [0, 1] (official best: 0)
    :param chunk_size: states per actor evaluation when computing the entropy bonuses
    """

    key = "soft-imitate"
    families = ("sac",)
    population_shared = frozenset({"bc_fraction"})

    def __init__(self, bc_fraction: float = 0.5, td_weight: float = 0.0, chunk_size: int = 65536):
        if not 0.0 < bc_fraction < 1.0:
            raise ValueError(
                f"bc_fraction is the share of pretrain_steps spent on behaviour cloning, in (0, 1), "
                f"got {bc_fraction}."
            )
        if not 0.0 <= td_weight <= 1.0:
            raise ValueError(
                f"The TD weight (lambda) of soft imitation pretraining lies in [0, 1], got {td_weight}."
            )
        self.bc_fraction, self.td_weight, self.chunk_size = bc_fraction, td_weight, int(chunk_size)
        # A branch (no TD term at all): the members of a population must agree on it (compared as a bool).
        self.td_weight_is_zero = td_weight == 0.0
        self.source: dict[str, Any] | None = None  # the source episode layout, until the switch
        self.returns_ready = False

    def wrong_family(self, agent: RecipeAgent) -> str:
        return (
            f"pretrain='soft-imitate' trains a tanh-Gaussian actor, a temperature and a critic ensemble; "
            f"{type(agent).__name__} is not a SAC-family agent (use it with edac or sac; pretrain='imitate' "
            "is the TD3-family recipe)."
        )

    def bc_steps(self, agent: RecipeAgent) -> int:
        """Updates 1..bc_steps are phase A (BC), the rest of the pretraining phase B (critic)."""
        return round(self.bc_fraction * agent.pretrain_until)

    # ------------------------------------------------------------------ soft Monte-Carlo returns

    def columns(self, agent: SoftRecipeAgent, dataset: RecipeDataset) -> dict[str, torch.Tensor]:
        """A zero placeholder, filled at the switch (a population of P > 1: one column per member); the
        episode layout of the source dataset is kept."""
        self.source = self.source_layout(agent, dataset)
        self.returns_ready = False
        members = (agent.n_members,) if agent.n_members > 1 else ()
        return {"soft_returns_to_go": torch.zeros(len(dataset), *members, device=dataset.device)}

    @staticmethod
    def source_layout(agent: SoftRecipeAgent, dataset: RecipeDataset) -> dict[str, Any]:
        """Per position of the complete source dataset: reward (as trained on), last-of-episode and tail
        flags, and the table row whose state gives its entropy bonus (-1: an episode without kept rows)."""
        episodes = dataset.source_episodes
        ends = torch.as_tensor(episodes.episode_ends, dtype=torch.long)
        lengths = torch.diff(ends, prepend=ends.new_zeros(1))
        n = int(ends[-1])
        episode_of = torch.repeat_interleave(torch.arange(len(ends)), lengths)
        last = torch.zeros(n, dtype=torch.bool)
        last[ends - 1] = True
        terminated = torch.as_tensor(episodes.terminations, dtype=torch.bool)
        index = torch.as_tensor(episodes.index, dtype=torch.long)
        row_of = torch.full((n,), -1, dtype=torch.long)
        row_of[index] = torch.arange(len(index))
        # The next kept position at or after each position, else the last kept one before it, same episode.
        positions = torch.arange(n)
        kept = row_of >= 0
        after = torch.where(kept, positions, n).flip(0).cummin(0).values.flip(0)
        before = torch.where(kept, positions, -1).cummax(0).values
        use_after = (after < n) & (episode_of[after.clamp(max=n - 1)] == episode_of)
        use_before = (before >= 0) & (episode_of[before.clamp(min=0)] == episode_of)
        source = torch.where(use_after, after, torch.where(use_before, before, -1))
        rows = torch.where(source >= 0, row_of[source.clamp(min=0)], -1)
        rewards = agent.transform_rewards(torch.as_tensor(episodes.rewards, dtype=torch.float64))
        device = dataset.device
        return {
            "rewards": rewards.to(device),
            "last": last.to(device),
            "tail": (last & ~terminated).to(device),
            "rows": rows.to(device),
            "index": index.to(device),
            "max_length": int(lengths.max()),
        }

    @classmethod
    def soft_returns_to_go(
        cls,
        rewards: torch.Tensor,
        entropies: torch.Tensor,
        last: torch.Tensor,
        tail: torch.Tensor,
        gamma: float,
        alpha: torch.Tensor | float,
        max_length: int | None = None,
    ) -> torch.Tensor:
        """G_t = sum_k gamma^k r_{t+k} + alpha sum_{k>=1} gamma^k H_{t+k} per episode, the last r and H of a
        `tail` episode divided by (1 - gamma) (AdamJelley/EfficientOfflineRL `compute_soft_returns_to_go`)."""
        dtype = torch.float32 if rewards.device.type == "mps" else torch.float64
        r, h = rewards.to(dtype), entropies.to(dtype)
        scale = torch.ones_like(r).masked_fill(tail, 1.0 / (1.0 - gamma))
        r, h = r * scale, h * scale
        alpha = torch.as_tensor(alpha, device=rewards.device).to(dtype)
        # sum_k gamma^k (r + alpha H)_{t+k} - alpha H_t: the first step's entropy is not part of G_t.
        total = discounted_suffix_sums(r + alpha * h, last, gamma, max_length)
        return (total - alpha * h).float()

    @torch.no_grad()
    def fill_soft_returns(self, agent: SoftRecipeAgent) -> None:
        """Compute the soft returns once with the current actor and alpha, into the table's column; a
        population's members each with their own actor (on the same states), alpha and gamma."""
        observations = agent.replay.column("observations")

        def entropies_of(chunk: torch.Tensor) -> torch.Tensor:  # (c,), or (P, c) for a population
            states = chunk.expand(agent.n_members, *chunk.shape) if agent.is_population else chunk
            return -agent.actor(states)[1]

        entropies = torch.cat([entropies_of(chunk) for chunk in observations.split(self.chunk_size)], dim=-1)
        source = self.source
        rows = source["rows"]
        entropies = torch.where(rows >= 0, entropies[..., rows.clamp(min=0)], 0.0)
        alpha = agent.alpha

        def returns_of(k: int | None) -> torch.Tensor:  # member k's (None: an ordinary agent's)
            return self.soft_returns_to_go(
                source["rewards"],
                entropies if k is None else entropies[k],
                source["last"],
                source["tail"],
                agent.gamma if k is None else member_setting(agent, "gamma", k),
                alpha if k is None else alpha.reshape(-1)[k],
                source["max_length"],
            )

        if agent.is_population:
            returns = torch.stack([returns_of(k) for k in range(agent.n_members)], dim=-1).squeeze(-1)
        else:
            returns = returns_of(None)
        agent.replay.write_column("soft_returns_to_go", returns[source["index"]])
        self.returns_ready = True

    # ------------------------------------------------------------------ losses and updates

    def actor_loss(
        self, agent: SoftRecipeAgent, batch: Batch, log_prob: torch.Tensor, alpha: torch.Tensor
    ) -> tuple[torch.Tensor, Stats]:
        """mean(alpha log pi(a~|s) - log pi(a_data|s)) (summed over a population's members, each with its own
        alpha); (loss, statistics)."""
        return (alpha * log_prob - agent.actor.log_prob(batch.observations, batch.actions)).mean(-1).sum(), {}

    def critic_loss(self, agent: SoftRecipeAgent, batch: Batch) -> tuple[torch.Tensor, Stats]:
        """mean_{i,b}(Q_i(s, a) - G)^2 [loss-normalised mix with TD] + the agent's critic term (EDAC: eta ES);
        returns (loss, statistics: that term as `pretrain_critic_penalty`). A population: each member's on
        its own batch and returns, summed (the penalty comes summed over members from the agent)."""
        q, penalty = agent.q_and_penalty(batch.observations, batch.actions)  # EDAC: one forward for both
        returns = own_values(batch.soft_returns_to_go).unsqueeze(-2)  # (…, 1, B) against (…, C, B)
        mc_loss = (q - returns).pow(2).mean(dim=(-2, -1))  # per member
        if not mixes_td(self.td_weight):
            loss = mc_loss.sum()
        else:
            td_loss = per_member_mse(q, agent.td_target(batch, agent.alpha))
            loss = normalised_mix(mc_loss, td_loss, self.td_weight)
        return loss + penalty, {"pretrain_critic_penalty": penalty}

    def update(self, agent: SoftRecipeAgent, batch: Batch) -> None:
        if agent.n_updates <= self.bc_steps(agent):
            self.imitation_update(agent, batch)
            return
        if not self.returns_ready:
            self.fill_soft_returns(agent)
            # The drawn batch still held the placeholder: draw again (kept as is: the same random stream as
            # the runs recorded so far).
            batch = agent.sample(batch.rewards.shape[-1])
        self.critic_update(agent, batch)

    def imitation_update(self, agent: SoftRecipeAgent, batch: Batch) -> None:
        """Phase A: temperature, then the entropy-regularised BC actor."""
        with agent.autocast():
            _, log_prob = agent.actor(batch.observations)
        agent.alpha_step(log_prob)
        alpha = agent.alpha
        with agent.autocast():
            actor_loss, stats = self.actor_loss(agent, batch, log_prob, alpha)
        agent.actor_step(actor_loss)
        agent.record(**stats, pretrain_actor_loss=actor_loss, alpha=alpha, entropy=-log_prob.detach().mean())

    def critic_update(self, agent: SoftRecipeAgent, batch: Batch) -> None:
        """Phase B: the critics on the soft Monte-Carlo returns; the targets follow."""
        with agent.autocast():
            critic_loss, stats = self.critic_loss(agent, batch)
        agent.critic_step(critic_loss)
        agent.update_targets()
        agent.record(pretrain_critic_loss=critic_loss, **stats)

    def finish(self, agent: RecipeAgent) -> None:
        self.source = None  # the episode layout is only needed at the switch (rebuilt with the table)


PRETRAINING[SoftImitation.key] = SoftImitation


def make_pretraining(key: str | None, **kwargs) -> Pretraining | None:
    if key is None:
        return None
    if key not in PRETRAINING:
        raise ValueError(
            f"Unknown pretraining recipe '{key}'. Known recipes: {', '.join(sorted(PRETRAINING))}."
        )
    return PRETRAINING[key](**kwargs)

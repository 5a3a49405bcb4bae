"""The device replay: the packed offline table, the online rows, and how batches are drawn from them.

Every transition is one row of a (rows, width) float tensor on the training device, its named columns side
by side (observations, actions, rewards, next_observations, terminations, then whatever components add:
Monte-Carlo returns, soft returns). A batch is one gather of rows and a `Batch` of column views into it, so
drawing it costs one index tensor and one copy, with no host round trip.

Sampling:
- `sample(n, offline_share)`: uniform; once online rows are sampleable, round(offline_share * n) rows come
  from the offline table and the rest from the online rows (sizes are host-side counters).
- `sample_offline(n)`, `sample_online(n)`: uniform from one source.
- `sample_prioritized(n)`: from offline ∪ online in proportion to per-row priorities, one draw per
  equal-mass segment (a sum tree's stratified draw), as cumsum + searchsorted on the device. New online rows
  enter at the running maximum priority (`prioritize_new_rows`); `set_priorities` updates sampled rows.
  A population keeps one row of priorities per member, over the offline rows and that member's own online
  rows, with its own running maximum: member k's prioritised draws are a population of one's (its uniform
  offsets from its own generator, its cumsum and search over its own row).

Every draw goes through `_gather(indices)`, whose rows keep any leading shape of `indices` and whose column
views slice the last axis, so a leading member axis (K independent batches) is a change of index shape here.
A population (zoo.agents.population) shares the offline table, while each member fine-tunes in its own env:
its online rows are (K, capacity, width), all members storing one row per env step, each member's rows
becoming sampleable on its own (`release(member)`), and each member's batch mixing in its own rows.
Nothing outside this module reads the storage; components read and write columns through the methods below.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import numpy as np
import torch

from zoo.nn.members import GLOBAL_RANDOM, MemberRandom

# Columns that keep their feature axis even when it has width 1; other width-1 columns come out squeezed.
VECTOR_COLUMNS = ("observations", "next_observations", "actions")


class Batch:
    """Named column views of sampled rows: `batch.observations`, `batch["rewards"]`, `"x" in batch`.

    A missing column is an AttributeError (so `hasattr` and `getattr(batch, name, default)` work) and a
    KeyError by subscript.
    """

    __slots__ = ("_columns",)

    def __init__(self, columns: Mapping[str, torch.Tensor] | None = None, **named: torch.Tensor):
        object.__setattr__(self, "_columns", {**(columns or {}), **named})

    def __getattr__(self, name: str) -> torch.Tensor:
        try:
            return self._columns[name]
        except KeyError:
            raise AttributeError(
                f"This batch has no column '{name}' (it has: {', '.join(self._columns)})."
            ) from None

    def __setattr__(self, name: str, value) -> None:
        raise AttributeError("A Batch is read-only: build a new one with batch.replace(name=value).")

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._columns[name]

    def __contains__(self, name: object) -> bool:
        return name in self._columns

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)

    def keys(self):
        return self._columns.keys()

    def items(self):
        return self._columns.items()

    def replace(self, **columns: torch.Tensor) -> "Batch":
        """A new batch with these columns added or replaced."""
        return Batch({**self._columns, **columns})

    def __repr__(self) -> str:
        shapes = ", ".join(f"{name}={tuple(value.shape)}" for name, value in self._columns.items())
        return f"Batch({shapes})"


class Replay:
    """Offline and online transitions of one agent on its device (see the module docstring).

    Order of use: `set_offline(columns)` (or `set_layout(widths)` when there is no offline data), optionally
    `add_column`, then `start_online(capacity)` before the first `append`.
    """

    def __init__(self, device: torch.device, random: MemberRandom = GLOBAL_RANDOM):
        self.device = torch.device(device)
        # Where row indices come from: torch's global generator, or one generator per population member
        # (then every draw has a leading member axis: member k's batch from member k's generator).
        self.random = random
        self._layout: dict[str, tuple[slice, bool]] = {}
        self._table: torch.Tensor | None = None
        self._online: torch.Tensor | None = None
        self._online_size = 0  # rows stored (per member: all members store one row per env step)
        self._online_ready = 0  # rows that can be sampled (the first ones)
        self._member_ready: list[int] | None = None  # a population's: per member
        self._priorities: torch.Tensor | None = None
        self._max_priority: torch.Tensor | None = None
        self._n_prioritized = 0  # online rows that have their priority

    # ------------------------------------------------------------------ layout

    def set_layout(self, widths: Mapping[str, int]) -> None:
        """The columns of a replay without offline rows (online-only fine-tuning)."""
        self._table = None
        self._layout = self._pack(widths)

    def set_offline(self, columns: Mapping[str, torch.Tensor]) -> None:
        """Pack per-transition columns (each (N, ...) on the device) into the offline table; any online
        rows are dropped (`start_online` lays them out again)."""
        flat = {name: column.reshape(column.shape[0], -1).float() for name, column in columns.items()}
        self._layout = self._pack({name: column.shape[1] for name, column in flat.items()})
        self._table = torch.cat(list(flat.values()), dim=1).contiguous()
        self._online, self._online_size, self._online_ready = None, 0, 0
        self._priorities = self._max_priority = None

    def add_column(self, name: str, width: int = 1, values: torch.Tensor | float = 0.0) -> None:
        """A new column of the offline table (before `start_online`), filled with `values`."""
        if name in self._layout:
            raise ValueError(f"The replay already has a column '{name}'.")
        if self._table is None or self._online is not None:
            raise RuntimeError("add_column extends the offline table, before start_online.")
        column = torch.zeros(self._table.shape[0], width, device=self.device)
        column[:] = values.reshape(-1, width) if torch.is_tensor(values) else values
        self._table = torch.cat([self._table, column], dim=1).contiguous()
        self._layout = self._pack(
            {**{n: s.stop - s.start for n, (s, _) in self._layout.items()}, name: width}
        )

    @staticmethod
    def _pack(widths: Mapping[str, int]) -> dict[str, tuple[slice, bool]]:
        layout, start = {}, 0
        for name, width in widths.items():
            layout[name] = (slice(start, start + width), width == 1 and name not in VECTOR_COLUMNS)
            start += width
        return layout

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self._layout)

    def column_width(self, name: str) -> int:
        cols, _ = self._layout[name]
        return cols.stop - cols.start

    @property
    def width(self) -> int:
        """Floats per row."""
        return max((cols.stop for cols, _ in self._layout.values()), default=0)

    @property
    def n_offline(self) -> int:
        return 0 if self._table is None else self._table.shape[0]

    @property
    def has_offline(self) -> bool:
        return self._table is not None

    # ------------------------------------------------------------------ reading and writing columns

    def _storage(self, source: str, member: int | None = None) -> torch.Tensor:
        if source == "offline":
            if self._table is None:
                raise RuntimeError("The replay has no offline rows.")
            return self._table
        if source == "online":
            if self._online is None:
                raise RuntimeError("The replay has no online rows yet: call start_online first.")
            if self._member_ready is None:
                return self._online[: self._online_size]
            if member is None:
                raise ValueError("A population's online rows are read per member: pass member=k.")
            return self._online[member, : self._online_size]
        raise ValueError(f"source is 'offline' or 'online', got {source!r}.")

    def stored(self, source: str = "offline") -> Batch:
        """Every stored row of one source as column views (writes to them do not reach the replay)."""
        return self._as_batch(self._storage(source))

    def column(self, name: str, source: str = "offline", member: int | None = None) -> torch.Tensor:
        """One column of every stored row of a source (squeezed like in batches); a population's online rows
        are member k's with `member=k`."""
        cols, squeeze = self._layout[name]
        view = self._storage(source, member)[:, cols]
        return view.squeeze(-1) if squeeze else view

    def write_column(
        self,
        name: str,
        values: torch.Tensor | float,
        rows: slice | torch.Tensor | None = None,
        source: str = "offline",
        member: int | None = None,
    ) -> None:
        """Write a column of stored rows in place (all of them, or `rows` of that source; a population's
        online rows: member k's with `member=k`); tensor values are shaped like `column(name)` returns them
        (a column one wide per member, as Cal-QL's per-member returns, gets the values in each)."""
        cols, squeeze = self._layout[name]
        if torch.is_tensor(values) and (squeeze or values.dim() == 1):
            values = values.unsqueeze(-1)
        self._storage(source, member)[slice(None) if rows is None else rows, cols] = values

    # ------------------------------------------------------------------ online rows

    def start_online(self, capacity: int, members: int | None = None) -> None:
        """Room for `capacity` online rows with the current layout (drops earlier online rows); a population
        of `members` gets that room per member."""
        shape = (capacity, self.width) if members is None else (members, capacity, self.width)
        self._online = torch.zeros(shape, device=self.device)
        self._online_size = self._online_ready = 0
        self._member_ready = None if members is None else [0] * members
        self._priorities = self._max_priority = None
        self._n_prioritized = 0

    def append(
        self,
        values: Mapping[str, np.ndarray | float],
        device_transforms: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
    ) -> int:
        """Store one transition (a population: one per member, each value with a leading member axis): its
        columns assembled on the host, one copy to the device, then each `device_transforms[name]` applied
        there (observation normalisation). Columns not given are 0 until written. Returns the row's index
        among the online rows."""
        if self._online is None:
            raise RuntimeError("Call start_online(capacity) before appending online rows.")
        capacity = self._online.shape[-2]
        if self._online_size >= capacity:
            raise RuntimeError(f"The online buffer is full ({capacity} transitions).")
        members = None if self._member_ready is None else len(self._member_ready)
        host = np.zeros(self._online.shape[-1] if members is None else (members, self._online.shape[-1]),
                        dtype=np.float32)
        for name, value in values.items():
            cols = self._layout[name][0]
            host[..., cols] = value if members is None else np.asarray(value).reshape(members, -1)
        row = torch.as_tensor(host, device=self.device)
        for name, transform in (device_transforms or {}).items():
            cols = self._layout[name][0]
            row[..., cols] = transform(row[..., cols])
        index = self._online_size
        self._online[..., index, :] = row
        self._online_size += 1
        return index

    def release(self, member: int | None = None) -> None:
        """Every stored online row becomes sampleable (a population's: all members', or member k's)."""
        if self._member_ready is None:
            self._online_ready = self._online_size
        elif member is None:
            self._member_ready = [self._online_size] * len(self._member_ready)
        else:
            self._member_ready[member] = self._online_size

    @property
    def online_size(self) -> int:
        return self._online_size

    @property
    def online_ready(self) -> int:
        return self._online_ready

    def member_ready(self, member: int) -> int:
        """A population's sampleable online rows of member k."""
        return self._member_ready[member]

    @property
    def online_capacity(self) -> int:
        return 0 if self._online is None else self._online.shape[-2]

    @property
    def can_sample(self) -> bool:
        if self._member_ready is not None:
            return self._table is not None or min(self._member_ready) > 0
        return self._table is not None or self._online_ready > 0

    # ------------------------------------------------------------------ uniform sampling

    def _as_batch(self, rows: torch.Tensor) -> Batch:
        return Batch(
            {
                name: rows[..., cols].squeeze(-1) if squeeze else rows[..., cols]
                for name, (cols, squeeze) in self._layout.items()
            }
        )

    def _uniform_offline_rows(self, n: int) -> torch.Tensor:
        return self._table[self.random.randint(self._table.shape[0], n, self.device)]

    def _uniform_online_rows(self, n: int) -> torch.Tensor:
        if self._member_ready is None:
            return self._online[self.random.randint(self._online_ready, n, self.device)]
        # A population's: member k's rows from its own online rows, its indices from its own generator.
        return torch.stack([
            self._online[k][self.random.randint_member(k, ready, n)]
            for k, ready in enumerate(self._member_ready)
        ])

    def sample(self, n: int, offline_share: float = 1.0) -> Batch:
        """n uniform rows; with online rows ready, round(offline_share * n) offline and the rest online."""
        if self._member_ready is not None:
            return self._as_batch(self._member_rows(n, offline_share))
        n_offline = n if self._online_ready == 0 else int(round(offline_share * n))
        parts = []
        if n_offline > 0:
            parts.append(self._uniform_offline_rows(n_offline))
        if n_offline < n:
            parts.append(self._uniform_online_rows(n - n_offline))
        return self._as_batch(parts[0] if len(parts) == 1 else torch.cat(parts, dim=-2))

    def _member_rows(self, n: int, offline_share: float) -> torch.Tensor:
        """A fine-tuning population's rows, (K, n, width): member k's batch mixes the offline table with its
        own online rows once it has sampleable ones, its indices from its own generator, as a population of
        one would draw them."""
        rows = []
        for k, ready in enumerate(self._member_ready):
            n_offline = n if ready == 0 else int(round(offline_share * n))
            parts = []
            if n_offline > 0:
                parts.append(self._table[self.random.randint_member(k, self._table.shape[0], n_offline)])
            if n_offline < n:
                parts.append(self._online[k][self.random.randint_member(k, ready, n - n_offline)])
            rows.append(parts[0] if len(parts) == 1 else torch.cat(parts))
        return torch.stack(rows)

    def sample_offline(self, n: int) -> Batch:
        """n uniform offline rows (a population: (K, n), member k's indices from its own generator)."""
        return self._as_batch(self._uniform_offline_rows(n))

    def sample_online(self, n: int) -> Batch:
        """n uniform sampleable online rows (a population: (K, n), member k's from its own rows)."""
        return self._as_batch(self._uniform_online_rows(n))

    def gather(self, indices: torch.Tensor) -> Batch:
        """Rows by index into offline ∪ online (offline rows first, then the online rows); a population's
        indices are (K, n), row k indexing offline ∪ member k's online rows."""
        return self._as_batch(self._gather(indices))

    def _online_rows(self, online_indices: torch.Tensor) -> torch.Tensor:
        if self._member_ready is None:
            return self._online[online_indices]
        members = torch.arange(self._online.shape[0], device=self.device)
        return self._online[members.view(-1, *[1] * (online_indices.dim() - 1)), online_indices]

    def _gather(self, indices: torch.Tensor) -> torch.Tensor:
        n_offline = self.n_offline
        if self._online is None:
            return self._table[indices]
        if self._table is None:
            return self._online_rows(indices)
        offline_rows = self._table[indices.clamp(max=n_offline - 1)]
        online_rows = self._online_rows((indices - n_offline).clamp(min=0))
        return torch.where((indices < n_offline).unsqueeze(-1), offline_rows, online_rows)

    # ------------------------------------------------------------------ prioritised sampling

    def start_priorities(self) -> None:
        """Priorities over offline ∪ online rows (float64): offline rows start at 1, the running maximum at
        1, online rows get it when `prioritize_new_rows` sees them. A population: one row of priorities and
        one running maximum per member, (K, offline + capacity) and (K,)."""
        size = self.n_offline + self.online_capacity
        members = () if self._member_ready is None else (len(self._member_ready),)
        self._priorities = torch.zeros(*members, size, dtype=torch.float64, device=self.device)
        self._priorities[..., : self.n_offline] = 1.0
        self._max_priority = torch.ones(members, dtype=torch.float64, device=self.device)
        self._n_prioritized = 0 if not members else [0] * members[0]

    @property
    def priorities(self) -> torch.Tensor:
        """Read-only copy of the priorities of offline ∪ online rows (rows not yet stored: 0); a
        population's: (K, rows), member k's over offline ∪ its own online rows."""
        return self._priorities.clone()

    @property
    def max_priority(self) -> torch.Tensor:
        return self._max_priority.clone()

    @property
    def n_prioritized(self) -> int | list[int]:
        """Online rows that have their priority (a population: per member)."""
        return self._n_prioritized if isinstance(self._n_prioritized, int) else list(self._n_prioritized)

    def prioritize_new_rows(self) -> None:
        """Online rows made sampleable since the last call get the running max priority (on the device; a
        population's member k: its own new rows, its own maximum)."""
        offset = self.n_offline
        if self._member_ready is None:
            start, stop = self._n_prioritized, self._online_ready
            if stop > start:
                self._priorities[offset + start : offset + stop] = self._max_priority
                self._n_prioritized = stop
            return
        starts, stops = self._n_prioritized, self._member_ready
        if len(set(starts)) == 1 and len(set(stops)) == 1:  # members released together: one write
            if stops[0] > starts[0]:
                self._priorities[:, offset + starts[0] : offset + stops[0]] = self._max_priority.unsqueeze(-1)
        else:
            for k, (start, stop) in enumerate(zip(starts, stops)):
                if stop > start:
                    self._priorities[k, offset + start : offset + stop] = self._max_priority[k]
        self._n_prioritized = [max(start, stop) for start, stop in zip(starts, stops)]

    def set_priorities(self, indices: torch.Tensor, priorities: torch.Tensor) -> None:
        """New priorities of rows (indices into offline ∪ online; a population's (K, n), row k member k's);
        the running maximum follows (member k's over its own rows)."""
        priorities = priorities.to(self._priorities.dtype)
        # A row drawn twice gets the same priority twice (the same row, the same density value).
        self._priorities.scatter_(-1, indices, priorities)
        self._max_priority = torch.maximum(self._max_priority, priorities.amax(-1))

    def sample_prioritized(self, n: int) -> tuple[torch.Tensor, Batch]:
        """(indices into offline ∪ online, batch): n draws proportional to priority over the sampleable
        rows, one per equal-mass segment. A population: (K, n) indices, member k's from its own priorities
        over offline ∪ its own sampleable online rows, its offsets from its own generator."""
        if self._member_ready is None:
            sizes = size = self.n_offline + self._online_ready
        else:
            sizes = [self.n_offline + ready for ready in self._member_ready]
            size = max(sizes)
        # A member's rows past its sampleable ones have priority 0: they add no mass to its cumsum.
        cdf = torch.cumsum(self._priorities[..., :size], dim=-1)
        mass = (
            torch.arange(n, device=self.device, dtype=cdf.dtype)
            + self.random.rand(n, device=self.device, dtype=cdf.dtype)
        ) * (cdf[..., -1:] / n)
        indices = torch.searchsorted(cdf, mass, right=True)
        if isinstance(sizes, int) or len(set(sizes)) == 1:
            indices = indices.clamp_(max=size - 1)
        else:
            last = torch.tensor(sizes, device=self.device).unsqueeze(-1) - 1
            indices = torch.minimum(indices, last)
        return indices, self._as_batch(self._gather(indices))


__all__ = ["Batch", "Replay", "VECTOR_COLUMNS"]

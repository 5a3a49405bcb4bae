"""Dataset generation: behaviour policies and the RL learners that make datasets, above evaluation.

- `zoo.datagen.behavior`: SAC behaviour actors and batched rollouts into Minari episodes.
- `zoo.datagen.behavior_training`: SB3 SAC runs that produce those actors, and choosing the checkpoints.
- `zoo.datagen.d4rl`: the D4RL-style recipes (`zoo datasets make`); `zoo.datagen.generate`: quickstart.
- `zoo.datagen.exorl`: URLB's reward-free explorers, collection in ExoRL's layout, relabelling and import.

Everything here writes through `zoo.data` (Minari storage) and `zoo.io`; nothing below imports it.
"""

"""dreamshift's model-based RL core: DreamerV3 world model, actor-critic, replay, train/eval loops, CLI."""

__version__ = "0.1.0"

"""dreamshift's model-based RL. The core sits at this package's top (DreamerV3 config, networks, RSSM, world model,
actor-critic, agent, seeds as a batch, replay, optimisers, :mod:`mbrl.runtime`); the runs built on it (checkpoint,
train, evaluate, adapt, merge, continual, convert, pretrain) are the subpackage :mod:`mbrl.runs`, one floor up. The
command line is the top-level package :mod:`dreamshift`. pyproject.toml's ``[tool.importlinter]`` lists the floors."""

__version__ = "0.1.0"

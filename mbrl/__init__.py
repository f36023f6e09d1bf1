"""dreamshift's model-based RL: the core (DreamerV3 config, networks, world model, actor-critic, agent, replay,
optimisers, :mod:`mbrl.runtime`), the runs built on it (:mod:`mbrl.checkpoint`, :mod:`mbrl.train`, the evaluator
:mod:`mbrl.evaluate`, :mod:`mbrl.merge`, :mod:`mbrl.adapt`, :mod:`mbrl.continual`, :mod:`mbrl.convert`,
:mod:`mbrl.pretrain`) and, at the top of the house, the command line :mod:`mbrl.cli`. pyproject.toml's
``[tool.importlinter]`` lists which module is in which layer."""

__version__ = "0.1.0"

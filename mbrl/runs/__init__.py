"""The runs: what a user starts on top of the core (one floor above it in the house, below ``experiments``).

:mod:`mbrl.runs.checkpoint` (the atomic run directory and the one run loader), :mod:`mbrl.runs.train` (the
training loop) and :mod:`mbrl.runs.train_members` (seeds as a batch), the evaluator :mod:`mbrl.runs.evaluate`,
:mod:`mbrl.runs.adapt`, :mod:`mbrl.runs.merge`, :mod:`mbrl.runs.continual`, :mod:`mbrl.runs.convert`,
:mod:`mbrl.runs.pretrain`, and what keeps a run safe: :mod:`mbrl.runs.run_lock` (one writer per run directory)
and :mod:`mbrl.runs.signals` (SIGTERM/SIGUSR2 handled like Ctrl-C). pyproject.toml's ``[tool.importlinter]``
contract keeps them from importing ``experiments`` or the command line.
"""

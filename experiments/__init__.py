"""Benchmark logic above single runs: results schema, metrics, sweeps (local / SLURM via submitit) and the
generalization leaderboard. The sweep grid files (``*.yaml``) live next to this package's modules."""

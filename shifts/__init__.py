"""Graded visual shifts (severity 0-5) applied to envs. Filled in by the shifts issue."""

"""The house is one-way: ``envs`` -> ``shifts`` -> ``encoders`` -> ``mbrl`` core -> ``mbrl.runs`` -> ``experiments``
-> the CLI package ``dreamshift``, each layer importing only from the layers below it, with no import cycle between
the modules of a package. The contracts are ``[tool.importlinter]`` in pyproject.toml; ``lint-imports`` checks them.

Also checked here: the folders show the floors (the runs in ``mbrl/runs/``, the CLI in ``dreamshift/``, nothing
else below ``mbrl/``), every module at ``mbrl``'s top is placed in the core layer of the ``house`` contract (the
core layer lists its modules, so a new module must be placed), and no project import hides inside a function (a
lazy import that dodges a cycle hides the cycle from the linter; heavy optional third-party packages may still
be imported lazily).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("envs", "shifts", "encoders", "mbrl", "experiments", "dreamshift")


def _config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]


def _lint_imports() -> Path:
    """The ``lint-imports`` script of this interpreter's environment."""
    script = Path(sys.executable).parent / "lint-imports"
    assert script.is_file(), f"no {script}: install the dev extra (pip install -e '.[dev]': import-linter)"
    return script


def test_import_contracts_are_kept():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([str(_lint_imports()), "--no-cache", "--no-logo", "pyproject.toml"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"lint-imports found imports that break the house:\n{res.stdout}\n{res.stderr}"
    contracts = {c["id"] for c in _config()["contracts"]}
    assert {"house", "acyclic"} <= contracts, contracts
    assert f"Contracts: {len(contracts)} kept, 0 broken." in res.stdout, res.stdout


def test_the_house_lists_the_layers_in_order():
    house = next(c for c in _config()["contracts"] if c["id"] == "house")
    assert house["type"] == "layers"
    assert set(_config()["root_packages"]) == set(PACKAGES)
    layers = [layer.split(" : ") for layer in house["layers"]]
    assert layers[0] == ["dreamshift"] and layers[1] == ["experiments"], layers
    assert layers[-3:] == [["encoders"], ["shifts"], ["envs"]], layers
    assert layers[2] == ["mbrl.runs"], layers
    core = set(layers[3])
    assert {"mbrl.agent", "mbrl.world_model", "mbrl.config", "mbrl.replay"} <= core, core


def test_the_folders_show_the_floors():
    """The runs live in ``mbrl/runs/``, the CLI in ``dreamshift/``; ``mbrl``'s only subpackage is ``runs``."""
    runs = {p.stem for p in (ROOT / "mbrl" / "runs").glob("*.py")} | {"evaluate"}
    assert {"train", "train_members", "checkpoint", "adapt", "merge", "continual", "convert", "pretrain",
            "run_lock", "signals"} <= runs, runs
    assert (ROOT / "mbrl" / "runs" / "evaluate" / "__init__.py").is_file()
    assert [p.parent.name for p in (ROOT / "mbrl").glob("*/__init__.py")] == ["runs"]
    assert (ROOT / "dreamshift" / "__main__.py").is_file() and not (ROOT / "mbrl" / "cli").exists()


def test_every_mbrl_module_is_placed_in_the_house():
    house = next(c for c in _config()["contracts"] if c["id"] == "house")
    placed = {m.strip() for layer in house["layers"] for m in layer.split(":")}
    modules = {f"mbrl.{p.stem}" for p in (ROOT / "mbrl").glob("*.py") if p.stem != "__init__"}
    modules |= {f"mbrl.{p.parent.name}" for p in (ROOT / "mbrl").glob("*/__init__.py")}  # mbrl.runs
    missing = sorted(modules - placed)
    assert not missing, (f"mbrl modules in no layer of the house contract (pyproject.toml [tool.importlinter]): "
                         f"{', '.join(missing)}; add each to the core or the runs layer")
    gone = sorted(m for m in placed if m.startswith("mbrl.") and m not in modules)
    assert not gone, f"the house contract lists modules that do not exist: {', '.join(gone)}"


def _inner_project_imports(path: Path) -> list[str]:
    """``file:line import`` for every import of a project package inside a function of ``path``."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if in_function and isinstance(child, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in child.names] if isinstance(child, ast.Import) else [child.module or ""]
                if any(n.split(".")[0] in PACKAGES for n in names):
                    found.append(f"{path.relative_to(ROOT)}:{child.lineno} {ast.unparse(child)}")
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(ast.parse(path.read_text()), False)
    return found


def test_project_imports_are_at_module_level():
    found = [hit for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
             for hit in _inner_project_imports(path)]
    assert not found, ("project imports inside functions (import them at module level; a cycle they dodge is a "
                       "layering bug):\n" + "\n".join(found))

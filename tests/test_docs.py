"""README.md and docs/*.md stay true to the code: every ``dreamshift`` command, sub-command and option they
name exists, every ``key=value`` config override they write is an allowed key with an allowed value, every
relative link (and its ``#anchor``) resolves, and the README stays a short map that keeps the two set-up
commands CI runs.

Only code (inline code spans and fenced code blocks) is checked for commands and keys; prose may say
"dreamshift" for the project.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
MAX_README_LINES = 150
SETUP_COMMANDS = ("bash .ci/setup && .venv/bin/dreamshift demo", ".venv/bin/python -m pytest -q -n auto")

# ``a=b`` strings in code that are not config overrides. Keep this list tiny; each entry says why.
NOT_CONFIG_KEYS = {
    "world_model", "actor_critic",  # per-module merge alphas: dreamshift merge/adapt-eval --alpha encoder=0,...
    "seeds",  # dreamshift train seeds=[0,1,2,3]: a batch of seeds (dreamshift.train.split_seeds), not a config key
}

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
SPAN = re.compile(r"(`+)(.+?)\1", re.S)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
# a config override: a lower-case (dotted) key, exactly one '=' (not '=='), then the value, which stops at
# whitespace, a quote, or a comma that starts the next ``key=``; not a Python keyword argument (``f(seed=s)``)
OVERRIDE = re.compile(r"(?<![\w.=<>$(:-])([a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)?)=(?!=)((?:[^\s`'\",]|,(?![a-z_.]+=))*)")
# ``dreamshift`` as a command word (after a path such as ``.venv/bin/``), then its arguments
COMMAND = re.compile(r"(?:^|[\s/(])dreamshift((?:\s+\S+)*)")
QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
SHELL_SEP = re.compile(r"\s*(?:;|&&|\|\|)\s*|\s\|\s")
# repository paths written in code, e.g. ``mbrl/config.py``, ``experiments/analysis/``
REPO_PATH = re.compile(r"(?<![\w./-])((?:mbrl|encoders|envs|shifts|experiments|benchmarks|tests|docs|\.ci)/[\w./-]*)")


def _code(text: str) -> list[str]:
    """The fenced code blocks of ``text`` (as one string each) and its inline code spans."""
    blocks = [m.group(1) for m in FENCE.finditer(text)]
    prose = FENCE.sub("", text)
    return blocks + [m.group(2) for m in SPAN.finditer(prose)]


def _code_lines(page: Path) -> list[str]:
    """Every line of code on ``page``, a shell comment (`` # ...``) cut off."""
    out = []
    for chunk in _code(page.read_text()):
        # a line ending in a backslash continues on the next
        for line in chunk.replace("\\\n", " ").splitlines():
            out.append(re.sub(r"\s#\s.*$", "", line))
    return out


def _parser() -> argparse.ArgumentParser:
    """The ``dreamshift`` parser, built as ``main`` builds it (every module of ``dreamshift.COMMANDS``)."""
    from dreamshift import _parser as build

    return build()


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {opt for action in parser._actions for opt in action.option_strings}


def _positional_choices(parser: argparse.ArgumentParser) -> set[str] | None:
    """The choices of the first positional argument, when it has any (``dreamshift envs list``)."""
    for action in parser._actions:
        if not action.option_strings and not isinstance(action, argparse._SubParsersAction):
            return set(action.choices) if action.choices else None
    return None


def _invocations() -> list[tuple[str, str]]:
    """``(page name, words after "dreamshift")`` for every dreamshift command in code."""
    out = []
    for page in PAGES:
        for line in _code_lines(page):
            # quoted arguments are one word (they may hold ';' or '|'); then split at shell separators
            for part in SHELL_SEP.split(QUOTED.sub("QUOTED", line)):
                for m in COMMAND.finditer(part):
                    words = m.group(1).split()
                    if words:
                        out.append((page.name, " ".join(words)))
    return out


def test_pages_exist():
    assert README.is_file()
    names = {p.name for p in DOCS}
    for page in ("configuration", "shifts", "encoders", "analyses", "adapt-merge-continual",
                 "sweeps-and-leaderboard", "benchmarks", "learning", "implementation", "environments"):
        assert f"{page}.md" in names, f"docs/{page}.md is missing"


def test_readme_is_a_short_map_with_the_setup_commands():
    text = README.read_text()
    lines = text.splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; keep it <= {MAX_README_LINES}"
    # the set-up block holds exactly the two commands (comments aside), verbatim
    setup = text.split("## Set up", 1)[1]
    block = FENCE.search(setup)
    assert block, "no code block under '## Set up'"
    commands = [re.sub(r"\s+#.*$", "", line).strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == list(SETUP_COMMANDS), commands
    # CI runs the second (after .ci/setup)
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert "bash .ci/setup" in ci and SETUP_COMMANDS[1] in ci, ci
    # every docs page is linked from the README
    for page in DOCS:
        assert f"(docs/{page.name}" in text, f"README.md does not link docs/{page.name}"


def test_dreamshift_commands_and_options_exist():
    parser = _parser()
    commands = _subparsers(parser)
    from dreamshift.analyze import ANALYSES

    found = _invocations()
    assert len(found) > 30, found  # the pages do show commands; a broken regex would find none
    bad = []
    for page, words in found:
        tokens = words.split()
        name = tokens[0]
        if name not in commands:
            bad.append(f"{page}: `dreamshift {words}`: no command {name!r} (have {', '.join(sorted(commands))})")
            continue
        leaf = commands[name]
        rest = tokens[1:]
        subs = _subparsers(leaf)
        choices = _positional_choices(leaf)
        if subs and rest and not rest[0].startswith("-"):
            if rest[0] not in subs:
                bad.append(f"{page}: `dreamshift {words}`: {name} has no sub-command {rest[0]!r}")
                continue
            leaf = subs[rest[0]]
        elif choices and rest and not rest[0].startswith("-") and rest[0] not in choices:
            bad.append(f"{page}: `dreamshift {words}`: {name} takes {', '.join(sorted(choices))}, not {rest[0]!r}")
        elif name == "analyze" and rest and not rest[0].startswith("-") and rest[0] not in ANALYSES:
            bad.append(f"{page}: `dreamshift {words}`: no analysis {rest[0]!r}")
        known = _options(leaf)
        for opt in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", words):
            if opt not in known:
                bad.append(f"{page}: `dreamshift {words}`: {leaf.prog} has no option {opt}")
    assert not bad, "\n".join(bad)


def _overrides() -> list[tuple[str, str, str]]:
    """``(page name, key, value)`` for every ``key=value`` in code."""
    out = []
    for page in PAGES:
        for line in _code_lines(page):
            for m in OVERRIDE.finditer(line):
                out.append((page.name, m.group(1), m.group(2)))
    return out


def _placeholder(value: str) -> bool:
    """``<dir>``, ``N``, ``DIR``, ``a|b``, ``...``, empty: a stand-in, not a value to validate."""
    return (not value or any(c in value for c in "<>|[]") or "..." in value
            or bool(re.fullmatch(r"[A-Z][A-Z0-9_]*", value)))


def test_config_keys_and_values_exist():
    from envs.errors import ConfigError
    from mbrl.config import allowed_keys, build_config

    allowed = set(allowed_keys())
    found = _overrides()
    assert len(found) > 30, found
    bad = []
    for page, key, value in found:
        if key in NOT_CONFIG_KEYS:
            continue
        if key not in allowed:
            bad.append(f"{page}: `{key}={value}`: no config key {key!r}")
            continue
        if _placeholder(value):
            continue
        try:
            build_config({key: value})
        except ConfigError as exc:
            bad.append(f"{page}: `{key}={value}`: {exc}")
    assert not bad, "\n".join(bad)


def test_every_config_key_is_documented():
    from mbrl.config import allowed_keys

    text = (ROOT / "docs" / "configuration.md").read_text()
    missing = [k for k in allowed_keys() if f"`{k}`" not in text]
    assert not missing, f"docs/configuration.md does not describe {', '.join(missing)}"


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*$", text, re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    text = FENCE.sub("", page.read_text())
    bad = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target}: {dest} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    assert not bad, f"{page.name}:\n" + "\n".join(bad)


def test_repository_paths_exist():
    bad = []
    for page in PAGES:
        for line in _code_lines(page):
            for path in REPO_PATH.findall(line):
                path = path.rstrip(".")
                if any(c in path for c in "*<>") or (ROOT / path).exists():
                    continue
                bad.append(f"{page.name}: {path}")
    assert not bad, "paths named in code that do not exist:\n" + "\n".join(bad)


def test_every_benchmark_script_is_documented():
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    scripts = sorted(p.name for p in (ROOT / "benchmarks").iterdir() if p.suffix in (".py", ".sh"))
    missing = [name for name in scripts if f"`{name}`" not in text]
    assert not missing, f"docs/benchmarks.md does not describe benchmarks/{', benchmarks/'.join(missing)}"


def test_learning_check_commands_exist(capsys):
    """``python benchmarks/learning.py run|report CHECK --option ...`` in code: the check and options exist."""
    from conftest import load_benchmark

    learning = load_benchmark("learning")
    helps: dict[str, str] = {}
    bad, found = [], 0
    for page in PAGES:
        for line in _code_lines(page):
            m = re.search(r"benchmarks/learning\.py\s+(\S+)\s*(\S*)(.*)", line)
            if not m:
                continue
            found += 1
            cmd, check, rest = m.groups()
            if cmd not in ("run", "report"):
                bad.append(f"{page.name}: learning.py has no command {cmd!r}: {line.strip()}")
                continue
            if check not in learning.CHECKS and check != "CHECK":
                bad.append(f"{page.name}: learning.py has no check {check!r}: {line.strip()}")
            if cmd not in helps:
                with pytest.raises(SystemExit):
                    learning.main([cmd, "--help"])
                helps[cmd] = capsys.readouterr().out
            for opt in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest):
                if not re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", helps[cmd]):
                    bad.append(f"{page.name}: learning.py {cmd} has no option {opt}: {line.strip()}")
    assert found >= 3, found
    assert not bad, "\n".join(bad)

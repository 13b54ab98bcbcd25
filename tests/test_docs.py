"""The docs run: every ```python block of docs/tutorial.md (default suite) and README.md (slow); the python and
bash blocks of docs/cli.md and docs/data.md in order; and every `cikg` command line in docs/*.md and README.md
parses."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _blocks(path: Path) -> str:
    return "\n".join(re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S))


def _run(path: Path, tmp_path, monkeypatch) -> dict:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_blocks(path), str(path), "exec"), namespace)  # noqa: S102 - our own documentation
    return namespace


def test_tutorial_runs(tmp_path, monkeypatch):
    namespace = _run(ROOT / "docs" / "tutorial.md", tmp_path, monkeypatch)
    dataset = namespace["dataset"]
    assert dataset.n_users == 400 and dataset.n_items == 120 and dataset.n_interests >= 2
    assert (tmp_path / "runs" / "tutorial" / "cikgrec" / "metrics.json").exists()


@pytest.mark.slow
def test_readme_example_runs(tmp_path, monkeypatch):
    namespace = _run(ROOT / "README.md", tmp_path, monkeypatch)
    assert namespace["result"].test["recall@20"] > 0


# ---------------------------------------------------------------------------------------------- shell commands
# docs/cli.md and docs/data.md: their ```python and ```bash blocks run in document order in an empty directory
# (`cikg` lines in-process through cikg.cli.main; a trailing `# exit N` names the expected status, else 0).
# In every doc, each `cikg ...` line of a fenced block (```sh ones: a server, a key or minutes of work) must parse.
RUN_PAGES = ["docs/cli.md", "docs/data.md"]
PARSE_PAGES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")) + ["README.md"]
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", flags=re.S | re.M)
_EXIT = re.compile(r"#\s*exit (\d+)\s*$")


def _shell_lines(text: str):
    """Command lines of a shell block: continuations joined, blank and comment-only lines dropped."""
    for line in text.replace("\\\n", " ").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            yield line.strip()


def _cikg_argv(line: str):
    """The arguments after `cikg` (or `python -m cikg` / `torchrun ... -m cikg`), else None."""
    import shlex

    try:
        words = shlex.split(line, comments=True)
    except ValueError:  # prose or a diagram with an apostrophe, not a command
        return None
    while words and "=" in words[0] and not words[0].startswith("-"):  # VAR=value cikg ...
        words = words[1:]
    if words[-1:] == ["&"]:
        words = words[:-1]
    if words[:1] == ["cikg"]:
        return words[1:]
    for k in range(len(words) - 1):
        if words[k:k + 2] == ["-m", "cikg"]:
            return words[k + 2:]
    return None


def _run_cikg(argv) -> int:
    from cikg.cli import main

    try:
        return main(argv)
    except SystemExit as stop:  # argparse usage errors and --help
        return int(stop.code or 0)


@pytest.mark.parametrize("page", RUN_PAGES)
def test_doc_commands_run(page, tmp_path, monkeypatch):
    import subprocess
    import sys

    monkeypatch.chdir(tmp_path)
    (tmp_path / "graphs").symlink_to(ROOT / "graphs")  # commands "from the repository root" read its recipes
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    namespace: dict = {}
    ran = 0
    for language, body in _FENCE.findall((ROOT / page).read_text()):
        if language == "python":
            exec(compile(body, page, "exec"), namespace)  # noqa: S102 - our own documentation
        elif language == "bash":
            for line in _shell_lines(body):
                expected = _EXIT.search(line)
                expected_rc = int(expected.group(1)) if expected else 0
                argv = _cikg_argv(line)
                if argv is not None:
                    rc = _run_cikg(argv)
                else:
                    rc = subprocess.run(line, shell=True, timeout=300).returncode  # noqa: S602
                assert rc == expected_rc, f"{page}: `{line}` exited {rc}, expected {expected_rc}"
                ran += 1
    assert ran >= 5, f"{page}: only {ran} commands"


@pytest.mark.parametrize("page", PARSE_PAGES)
def test_doc_cikg_lines_parse(page):
    from cikg.cli import build_parser

    parser = build_parser()
    for language, body in _FENCE.findall((ROOT / page).read_text()):
        if language not in ("", "bash", "sh", "shell", "console"):
            continue
        for line in _shell_lines(body):
            argv = _cikg_argv(line) if not line.startswith(("usage:", "cikg [")) else None
            if not argv or _EXIT.search(line) or "-h" in argv or "--help" in argv:
                continue
            try:
                parser.parse_args(argv)
            except SystemExit:
                pytest.fail(f"{page}: `{line}` does not parse")

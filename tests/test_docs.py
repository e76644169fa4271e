"""The docs cannot drift from the tree: README.md and every docs/*.md may name only files, make
targets, catdog commands and options, and tests that exist.

What counts as a name, precisely (the rules `problems` applies to one document):

- **Code** is every inline code span (`...`) and every command in a fenced block marked as shell
  (```bash, sh, shell, console); other fenced blocks (output, file trees, Python, TOML) and prose
  are not read, except for link targets and the test rule's `file.py::name` form.
- **A file or folder**: in inline code spans and link targets (`[text](target)`, images too), a
  whitespace-separated token (the value of a `VAR=value` token) is a repository path when it ends
  in a known suffix (SUFFIXES) or its first folder is one of the repository's top-level folders.
  A path with a slash must exist from the repository's root, or as the tail of an existing path
  (`strategies/best.py` for catdog/search/strategies/best.py); a bare name (`cpu.toml`) must be
  the name of some file, or a file name catdog's own source writes (an artifact it logs, such as
  comparison.png or summary.json). A link target is taken from the document's own folder first. Not
  checked: URLs and URIs (`://`, `models:/...`), absolute, `~` and `../` paths (outside the
  repository), placeholders and globs (`<`, `>`, `...`, `*`, `?`, `{`, `$`, `path/to/`), and what
  catdog or make create at run time (RUNTIME: data/, mlruns/, reports/, .venv/, .tuner/,
  benchmarks/results/). "Exists" means tracked by git or new and not git-ignored, so a path that
  only a local run left behind does not count.
- **A make target**: in code, `make` at the start of a command (after `VAR=value`s, `nice -n 19`,
  `time` ...) followed by words that are not options (`-n`, `-C DIR`) or assignments: each word
  must be a target the Makefile defines.
- **A catdog command**: in code, `catdog` (also `.venv/bin/catdog`, `python -m catdog`) at the
  start of a command: its global options, command and, for a group, subcommand must be ones
  `--help` lists (read from `catdog.cli.main` with click's API, not a subprocess), and so must
  every `--option` up to the end of the command (`|`, `&&`, `;`, `#`). Placeholders (`...`,
  `<command>`, `[...]`) end the check.
- **A catdog command line**, parsed: each `catdog` command in code is also parsed by click as
  the shell would pass it (`make_context`, nothing runs), so a value an option no longer takes
  (a strategy's name, a number where a duration was) fails too. `[...]` marks what may be left
  out, `a|b` a choice (the first is parsed) and `<...>` one value; a line with `...` is not
  parsed. A command in a shell block must be whole (its required options given); inline code
  may name a command (`catdog train`) without them.
- **A test**: `file.py::test_name` anywhere (and `::test_name` continuing a list) must be a test
  defined in tests/file.py (in tests/ for `::name`); a code span that is a bare `test_name` must
  be a test defined in tests/, unless catdog's own source writes that exact string (a metric
  name, such as test_accuracy).
"""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import tomllib
from functools import cache
from pathlib import Path

import click
import pytest

from catdog.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SUFFIXES = (
    ".py",
    ".toml",
    ".md",
    ".png",
    ".txt",
    ".lock",
    ".cfg",
    ".ini",
    ".yml",
    ".yaml",
    ".json",
    ".sh",
    ".j2",
)
RUNTIME = ("data/", "mlruns/", "reports/", ".venv/", ".tuner/", "benchmarks/results/")
PLACEHOLDER = re.compile(r"[<>*?{}$]|\.\.\.|…|^path/to/|/path/to/")
SEPARATORS = {"|", "||", "&&", ";", "&", "\\"}
WRAPPERS = {"nice", "time", "env", "exec", "sudo", "timeout", "-n", "19", "nohup"}


# ----------------------------------------------------------------------------- the tree, indexed
@cache
def tree() -> tuple[frozenset[str], frozenset[str]]:
    """(files, folders) of the repository, as paths from its root: tracked, or new and not
    git-ignored; a checkout without git falls back to walking it."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        files = {f for f in out.splitlines() if (ROOT / f).exists()}
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "__pycache__", "mlruns", "data", ".tuner", "reports"}
        files = {
            str(p.relative_to(ROOT))
            for p in ROOT.rglob("*")
            if p.is_file() and not skip & set(p.relative_to(ROOT).parts)
        }
    folders = {str(Path(f).parents[i]) for f in files for i in range(len(Path(f).parts) - 1)}
    return frozenset(files), frozenset(folders)


@cache
def make_targets() -> frozenset[str]:
    text = (ROOT / "Makefile").read_text()
    found = set()
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9][\w.-]*(?:[ \t]+[A-Za-z0-9][\w.-]*)*)[ \t]*:(?![=:])", line)
        if m:
            found.update(m.group(1).split())
    return frozenset(found)


@cache
def defined_tests() -> dict[str, frozenset[str]]:
    """{"test_x.py": names of the test functions and classes it defines}."""
    found = {}
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        names = {
            node.name
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and node.name.startswith(("test", "Test"))
        }
        found[path.name] = frozenset(names)
    return found


@cache
def catdog_strings() -> frozenset[str]:
    """Every string constant in catdog's own source: the names it gives metrics and artifacts."""
    found = set()
    for path in (ROOT / "catdog").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found |= {node.value, node.value.rsplit(".", 1)[0]}  # test_predictions(.csv)
    return frozenset(found)


# --------------------------------------------------------------------------- reading a document
FENCE = re.compile(r"^\s*(```|~~~)\s*(\w*)")
SHELL = {"bash", "sh", "shell", "console", "zsh"}
SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|^\s*\[[^\]\n]+\]:\s*(\S+)", re.M)


def split(text: str) -> tuple[list[str], list[str], str]:
    """(inline code spans, shell blocks' lines joined at `\\` continuations, prose without
    code)."""
    spans, fenced, prose, block, inside, shell = [], [], [], [], False, False
    for line in text.splitlines():
        if m := FENCE.match(line):
            inside, shell = not inside, m.group(2) in SHELL
            continue
        if inside:
            if not shell:
                continue
            block.append(line)
            if not line.rstrip().endswith("\\"):
                fenced.append(" ".join(part.rstrip().removesuffix("\\") for part in block))
                block = []
        else:
            spans += SPAN.findall(line)
            prose.append(SPAN.sub(" ", line))
    return spans, fenced, "\n".join(prose)


def tokens(code: str) -> list[str]:
    try:
        return shlex.split(code, comments=True)
    except ValueError:  # an unbalanced quote in an example: whitespace will do
        return code.split()


def commands(code: str) -> list[list[str]]:
    """The shell commands in CODE, split at separators, each cut at the first `#` comment."""
    out, current = [], []
    for tok in tokens(code):
        if tok in SEPARATORS:
            out.append(current)
            current = []
        else:
            current.append(tok)
    return [c for c in (*out, current) if c]


def starts_command(words: list[str], i: int) -> bool:
    """Whether WORDS[i] is the program a shell command runs: only VAR=value assignments and
    wrappers (nice -n 19, time, python -m) come before it."""
    before = words[:i]
    if before[-2:] == ["python", "-m"] or (before and before[-1] == "-m"):
        return True
    return all(
        ("=" in w and not w.startswith("-")) or w in WRAPPERS or re.fullmatch(r"(\S*/)?python3?", w)
        for w in before
    )


# ------------------------------------------------------------------------------------- the rules
def path_problem(token: str, base: Path = ROOT) -> str | None:
    """The problem with TOKEN if it is a repository path that does not exist (BASE: the folder
    a link is read from)."""
    token = token.split("::")[0].strip("\"'").lstrip("(").rstrip("),;:.")  # file.py::test_x
    token = token.split("=", 1)[1] if re.match(r"^[A-Z_]+=", token) else token
    if (
        not token
        or "://" in token
        or re.match(r"^[a-z]+:", token)
        or PLACEHOLDER.search(token)
        or token.startswith(("/", "~", "../", "-", "#", "@"))
    ):
        return None
    files, folders = tree()
    top = {f for f in folders if "/" not in f}
    looks = token.endswith(SUFFIXES) or ("/" in token and token.split("/")[0] in top)
    plain = token.removeprefix("./").rstrip("/")
    if not looks or (plain + "/").startswith(RUNTIME):
        return None
    linked = (base / plain).resolve()
    candidates = {plain, *([str(linked.relative_to(ROOT))] if linked.is_relative_to(ROOT) else [])}
    if candidates & (files | folders):
        return None
    names = (*files, *folders)
    if "/" not in plain and (
        plain in catdog_strings() or any(Path(f).name == plain for f in names)
    ):
        return None
    if "/" in plain and any(f.endswith("/" + plain) for f in names):
        return None
    return f"names `{token}`, which is not in the repository"


def make_problems(words: list[str]) -> list[str]:
    out = []
    for i, word in enumerate(words):
        if word != "make" or not starts_command(words, i):
            continue
        rest, skip = words[i + 1 :], False
        for arg in rest:
            if skip:
                skip = False
            elif arg in ("-C", "-f", "-I", "-o", "-W"):
                skip = True
            elif arg.startswith(("-", "[")) or "=" in arg or PLACEHOLDER.search(arg):
                continue
            elif re.fullmatch(r"[a-z][\w-]*", arg) and arg not in make_targets():
                out.append(f"runs `make {arg}`, a target the Makefile lacks")
        break
    return out


def _options(cmd: click.Command) -> set[str]:
    return {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} | {"--help", "-h"}


def catdog_problems(words: list[str]) -> list[str]:
    for i, word in enumerate(words):
        if (word == "catdog" or word.endswith("/catdog")) and starts_command(words, i):
            return _check_invocation(words[i + 1 :])
    return []


def _check_invocation(args: list[str]) -> list[str]:
    cmd, path, out = main, ["catdog"], []
    for arg in args:
        if PLACEHOLDER.search(arg) or arg.startswith("["):
            break
        if arg.startswith("--"):
            name = arg.split("=", 1)[0]
            if name not in _options(cmd):
                out.append(
                    f"runs `{' '.join(path)} {name}`, an option `{' '.join(path)} --help` "
                    "does not list"
                )
        elif isinstance(cmd, click.Group) and not arg.startswith("-"):
            sub = cmd.get_command(click.Context(cmd), arg)
            if sub is None:
                out.append(
                    f"runs `{' '.join(path)} {arg}`, a command `{' '.join(path)} --help` "
                    "does not list"
                )
                break
            cmd, path = sub, [*path, arg]
    return out


def parse_problems(words: list[str], whole: bool) -> list[str]:
    """The problem click finds parsing a `catdog` command line as a shell would pass it (values,
    choices, ranges, arguments; nothing runs). `[...]` marks what may be left out and `a|b` a
    choice: the first is taken; `<...>` is one value. A line with `...` is not parsed. Unless
    WHOLE (a command in a shell block), a missing required option is no problem: inline code
    also names a command (`catdog train`) without writing a whole line of it."""
    for i, word in enumerate(words):
        if (word == "catdog" or word.endswith("/catdog")) and starts_command(words, i):
            line = " ".join(words[i + 1 :]).replace("\\", "")
            break
    else:
        return []
    if "..." in line or "…" in line:
        return []
    line = re.sub(r"<[^>]*>", "VALUE", line)
    args = [w.split("|")[0] for w in line.replace("[", " ").replace("]", " ").split()]
    if not args or {"-h", "--help", "--version"} & set(args):
        return []
    try:
        ctx = main.make_context("catdog", args)
        cmd = main
        while isinstance(cmd, click.Group):
            rest = [*ctx._protected_args, *ctx.args]  # what the group left to its subcommand
            if not rest:
                break
            name, cmd, rest = cmd.resolve_command(ctx, rest)
            ctx = cmd.make_context(name, rest, parent=ctx)
    except click.MissingParameter:
        return [f"runs `catdog {line}`, which lacks a required option or argument"] if whole else []
    except click.UsageError as exc:  # click's BadParameter, NoSuchOption, extra arguments...
        return [f"runs `catdog {line}`, which click refuses: {exc.format_message()}"]
    return []


def cited_test_problems(text: str) -> list[str]:
    out = []
    defined = defined_tests()
    every = frozenset().union(*defined.values())
    for file, name in re.findall(r"(?:tests/)?(test_\w+\.py)?::(test\w+)", text):
        if file and name not in defined.get(file, ()):
            out.append(f"cites `{file}::{name}`, which tests/{file} does not define")
        elif not file and name not in every:
            out.append(f"cites `::{name}`, which no test file defines")
    return out


def bare_test_problem(span: str) -> str | None:
    name = span.strip()
    if (
        re.fullmatch(r"test_\w+", name)
        and name not in frozenset().union(*defined_tests().values())
        and name not in catdog_strings()
    ):
        return f"cites `{name}`, which is neither a test in tests/ nor a name catdog writes"
    return None


def problems(text: str, doc: Path = ROOT / "README.md") -> list[str]:
    """What TEXT (the content of DOC) names that the repository does not have."""
    spans, fenced, prose = split(text)
    found = []
    for span in spans:
        found += [p for tok in tokens(span) if (p := path_problem(tok))]
        found += [p for p in [bare_test_problem(span)] if p]
    for target in (a or b for a, b in LINK.findall(prose)):
        if not re.match(r"^([a-z]+:|#)", target):
            found += [p for p in [path_problem(target.split("#")[0], doc.parent)] if p]
    for code in (*spans, *fenced):
        for words in commands(code):
            named = catdog_problems(words)  # names first: then no second word on the same
            found += make_problems(words) + (named or parse_problems(words, code in fenced))
    found += cited_test_problems(text)
    return list(dict.fromkeys(found))


# ------------------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_docs_name_only_what_exists(doc):
    found = problems(doc.read_text(), doc)
    assert not found, f"{doc.relative_to(ROOT)}:\n  " + "\n  ".join(found)


def test_sweep_files_name_no_data_outside_the_repository():
    """The docs tell users to run experiments/*.toml: a `data` path there must not depend on
    where this repository was checked out (`make ... DATA=` says where the data is)."""
    for path in sorted((ROOT / "experiments").glob("*.toml")):
        data = tomllib.loads(path.read_text()).get("data")
        assert data is None or not (data.startswith(("/", "..", "~"))), (
            f"{path.name} names data outside the repository: {data}"
        )


@pytest.mark.parametrize(
    "sample,needle",
    [
        ("The race lives in `experiments/cpu-race.toml`.", "experiments/cpu-race.toml"),
        ("| `cpu-race.toml` | a race |", "cpu-race.toml"),
        ("See [the guide](docs/nowhere.md).", "docs/nowhere.md"),
        ("![runs](docs/missing.png)", "docs/missing.png"),
        ("Code lives in `catdog/cli.py`.", "catdog/cli.py"),
        ("Folders: `catdog/nothing/`.", "catdog/nothing/"),
        ("Run `make sweep-everything DATA=x`.", "make sweep-everything"),
        ("```bash\nCI=true make test nonsense\n```", "make nonsense"),
        ("Its plot is `comparisons.png`.", "comparisons.png"),
        ("Run `catdog sweeps experiments/quick.toml`.", "catdog sweeps"),
        ("Run `catdog data fetch`.", "catdog data fetch"),
        (
            "```sh\n.venv/bin/catdog sweep experiments/quick.toml \\\n  --max-trial 2\n```",
            "catdog sweep --max-trial",
        ),
        ("Run `catdog --quiet train`.", "catdog --quiet"),
        ("Run `catdog sweep experiments/cpu.toml --strategy fastest`.", "'fastest' is not one"),
        ("| `catdog sweep FILE [--strategy race\\|best]` |", "'race' is not one"),
        ("```bash\ncatdog train --arch resnet --epochs ten\n```", "--epochs"),
        ("Run `catdog archs resnet`.", "unexpected extra argument"),
        ("```bash\n.venv/bin/catdog train --epochs 2\n```", "lacks a required"),
        (
            "Proof: `test_faults.py::test_memory_stays_flat_over_20_trials`.",
            "test_memory_stays_flat_over_20_trials",
        ),
        (
            "Proof: `test_distributed.py::test_restarts_are_bounded`, `::test_no_such_thing`.",
            "test_no_such_thing",
        ),
        ("Proof: `test_a_claim_nobody_tested`.", "test_a_claim_nobody_tested"),
    ],
)
def test_each_rule_fails_on_a_bad_sample(sample, needle):
    found = problems(sample)
    assert len(found) == 1 and needle in found[0], found


def test_what_is_not_a_repository_name_passes():
    sample = """
Runs land in `mlruns/mlflow.db`, tuner state in `.tuner/`, reports in `reports/x.html`, the
bench in `benchmarks/results/bench.json`. See https://mlflow.org/docs and
[MLflow](https://mlflow.org), `models:/catdog@champion`, `sqlite:///mlruns/mlflow.db`,
`path/to/photos`, `<sweep>.toml`, `experiments/*.toml`, `../shared/data/x`, `/tmp/a.py`,
`test_accuracy` and `test_predictions_tta`, `catdog train` (a command named, not a line), class folders such as `horses/` and `train/cats/`,
and `strategies/best.py`, `cpu.toml`, `catdog/models/`,
`tests/test_docs.py::test_each_rule_fails_on_a_bad_sample`.
To make sure it works, make the `catdog` command the first thing you try. A sweep logs
`comparison.png` and `sweep_config.json`.

```
catdog fp32    108.2 / 113.5   (output, not a command)
catdog/cli.py  a file tree of an older release
```

```python
from catdog import sweepfile
import catdog
```

```bash
nice -n 19 make -C . sweep EXP=experiments/quick.toml [DATA=...]
.venv/bin/catdog sweep experiments/cpu.toml --data <the sample> --register --seed 7
catdog sweep FILE [--strategy focus|compare|best] [--budget 45m]
KERASTUNER_TUNER_ID=chief python -m catdog sweep experiments/gpu.toml --data DIR  # chief
catdog --verbose sweep ... --no-pretrained
catdog data prepare path/to/zip --help | less
```
"""
    assert problems(sample) == []

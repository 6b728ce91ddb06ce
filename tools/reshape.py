#!/usr/bin/env python3
"""Reshape tflq's flat package into one folder per pipeline stage (issue 10, first step), mechanically and re-runnably.

Run at the repository root on a clean git tree:

    python tools/reshape.py            # git mv every module, create the packages, rewrite every reference
    python tools/reshape.py --check    # change nothing; exit 1 if a run would change something

What it does (tools/RESHAPE.md has the table and the reasons):

1. ``git mv tflq/<old>.py tflq/<package>/<new>.py`` for every module in :data:`MOVES` (one old module -> one new
   module; file contents are never split), and creates each package's ``__init__.py`` (a one-line docstring, plus the
   re-exports of :data:`REEXPORTS`: the names README's "Python API" imports from a path that stays a package) and
   ``tflq/__main__.py``.
2. Rewrites every reference to an old module path in every tracked text file outside ``tools/``: ``import tflq.x``,
   ``from tflq.x import y``, ``from tflq import x [as y]`` (module imports become ``from tflq.pkg import mod as x``),
   relative imports in the flat package, dotted names in strings and prose (``"tflq.x.attr"``, ``-m tflq.cli``,
   ``tflq.cli:main``), file paths (``tflq/x.py``) and backticked module file names (```x.py```).
3. Fails loudly, before changing anything, on a ``tflq/<name>.py`` or a ``tflq.<name>`` reference it has no mapping
   for, and on a name that would be ambiguous after the move.

Idempotent: every new path is recognised as new and left alone; a second run changes nothing. Lines between
``reshape: keep-begin`` and ``reshape: keep-end`` markers (e.g. pyproject's import-linter contract, which already
names the new layout) are never rewritten.
"""
from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

# Old module (tflq/<old>.py) -> new module path below tflq/ (without .py). Modules issue 9's branches add are mapped
# too (an entry whose file does not exist is skipped); a module that is in neither MOVES nor KEEP stops the run.
MOVES: dict[str, str] = {
    # cli/: the click shell. cli.py is not cli/main.py: cli.py defines `main`, so `tflq.cli.main` would name both
    # the module and the old function.
    "cli": "cli/app",
    "cli_measure": "cli/measure",
    "cli_debug": "cli/debug",
    # batch/: YAML -> typed options; plan jobs, manifest, executors, gates.
    "config": "batch/config",
    "batch": "batch/run",
    "config_yaml": "batch/config_yaml",  # issue 9 (i9-config)
    "config_checks": "batch/config_checks",  # issue 9 (i9-config)
    "batch_manifest": "batch/manifest",  # issue 9 (i9-batchrun)
    "batch_auto": "batch/auto_job",  # issue 9 (i9-batchrun)
    # debug/: per-layer error, selective and mixed precision, auto search.
    "debug": "debug/layer_error",
    "debug_report": "debug/report",
    "scoring": "debug/scoring",
    "auto": "debug/auto",
    "debug_run": "debug/debug_models",  # issue 9 (i9-debug): runs the debug models, accumulates their statistics
    # measure/: the LiteRT interpreter and everything measured on it.
    "runner": "measure/runner",
    "latency": "measure/latency",
    "metrics": "measure/metrics",
    "tflite_info": "measure/tflite_info",
    "harness": "measure/harness",
    "isolation": "measure/isolation",
    "measurement": "measure/measurement",  # issue 9 (i9-measure)
    "tasks": "measure/tasks",  # issue 9 (i9-measure)
    "tflite_contents": "measure/tflite_contents",  # issue 9 (i9-measure)
    # convert/: the session (export once, calibrate once, build, verify, write atomically) and the op names.
    "convert": "convert/session",
    "layer_map": "convert/layer_map",
    "conversion_errors": "convert/conversion_errors",  # issue 9 (i9-convert)
    # qat/: tfmot training.
    "bridge": "qat/bridge",
    "losses": "qat/losses",
    "qat": "qat/quantize_aware",
    "training": "qat/training",
    # model/: load and export the user's model; the one data layer.
    "models": "model/load",
    "data": "model/data",
    "model_files": "model/file_checks",  # issue 9 (i9-files)
    "user_code": "model/user_code",  # issue 9 (i9-files)
    # report/: tables and files; plots.
    "report": "report/render",
    "plot": "report/plot",
    # _tf/: the only place private TensorFlow / LiteRT APIs are touched.
    "_tf": "_tf/imports",
    "_calibrated": "_tf/calibrated",
}

# Modules that stay where they are: the package, the registry, the exception family, and two bottom-layer utilities
# every stage uses (main's settings declarations; issue 9's output-file writing, i9-convert).
KEEP: frozenset[str] = frozenset({"__init__", "__main__", "errors", "modes", "options", "outputs"})

# The one-line docstring of each new package.
PACKAGES: dict[str, str] = {
    "cli": "The tflq command line: a thin click shell over the library, one module per group of commands.",
    "batch": "Batch runs: YAML batch files -> typed job settings; plan, convert, measure, gate and report every job.",
    "debug": "Quantization debugging: per-layer error, selective and mixed precision, and the auto search.",
    "measure": "Measure .tflite files with the LiteRT interpreter: runner, latency protocol, metrics, inspection.",
    "convert": "The conversion session: export once, calibrate once, build each variant, verify, write atomically.",
    "qat": "Quantization-aware training with tensorflow-model-optimization.",
    "model": "The user's model: load .keras / .h5 / SavedModel and export it once; the one data layer.",
    "report": "Reports: terminal tables, Markdown, JSON, CSV and plots.",
    "_tf": "The only place that imports TensorFlow and touches its private (and LiteRT's) APIs.",
}

# Names README's "Python API" imports as `from tflq.<pkg> import NAME`, where tflq.<pkg> was a module and is now a
# package: the package re-exports them so those imports keep working. Nothing else is re-exported.
REEXPORTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "convert": ("session", ("Artifact", "ConvertOptions", "ConvertResult", "convert_model")),
    "batch": ("run", ("BatchResult", "JobResult", "run_batch")),
    "debug": ("layer_error", ("DebugOptions", "DebugReport", "debug_quantization")),
    "report": ("render", ("render_table", "to_csv", "to_json", "to_markdown")),
}

MAIN_MODULE = '''"""``python -m tflq``: the tflq command."""
from __future__ import annotations

from tflq.cli.app import main

if __name__ == "__main__":  # pragma: no cover
    main()
'''

# `tflq.<word>` tokens that are not module paths: file names in prose and configs (tflq.yaml), and the
# dataclass-metadata key of tflq/options.py ("tflq.setting").
NOT_MODULES: frozenset[str] = frozenset({"yaml", "yml", "egg", "tflite", "json", "setting"})

KEEP_BEGIN = "reshape: keep-begin"
KEEP_END = "reshape: keep-end"

DOTTED = re.compile(r"(?<![\w.])tflq((?:\.[A-Za-z_]\w*)+)")
FILE_PATH = re.compile(r"(?<![\w./])tflq/([A-Za-z_]\w*)\.py\b")
BACKTICKED = re.compile(r"(?<=`)([A-Za-z_]\w*)\.py(?=`)")
FROM_TFLQ_IMPORT = re.compile(
    r"^(?P<indent>[ \t]*)from[ \t]+tflq[ \t]+import[ \t]+(?P<names>\([^)]*\)|[^\n#]*?)(?P<comment>[ \t]*#[^\n]*)?$",
    re.MULTILINE,
)
IMPORTED_NAME = re.compile(r"[ \t]+import[ \t]+\(?\s*([A-Za-z_]\w*)")
RELATIVE_IMPORT = re.compile(r"^(?P<indent>[ \t]*)from[ \t]+\.(?P<module>[A-Za-z_]\w*)?[ \t]+import\b", re.MULTILINE)


class ReshapeError(Exception):
    """Something the script has no rule for: it stops before changing anything."""


def new_module(old: str) -> str:
    """``convert`` -> ``convert.session``."""
    return MOVES[old].replace("/", ".")


def submodules(package: str) -> set[str]:
    return {path.split("/")[1] for path in MOVES.values() if path.split("/")[0] == package}


@dataclass
class Layout:
    """Which old modules the rewrite treats as old: those whose file is in the work tree or in HEAD.

    A name that is both an old module and a new package (``convert``, ``debug``, ...) means the old module while
    the old file is in the tree or in HEAD, and the package once the reshape is committed.
    """

    root: Path
    old_present: set[str] = field(default_factory=set)

    @classmethod
    def read(cls, root: Path) -> Layout:
        in_head = set(git(root, "ls-tree", "--name-only", "HEAD", "tflq/").split())
        present = set()
        for old in MOVES:
            if (root / "tflq" / f"{old}.py").is_file() or f"tflq/{old}.py" in in_head:
                present.add(old)
        return cls(root, present)

    def is_old(self, name: str) -> bool:
        if name not in MOVES:
            return False
        if name in PACKAGES:  # ambiguous: old module only while its file exists somewhere
            return name in self.old_present
        return True


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise ReshapeError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def top_level_names(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names


def check_no_ambiguity(layout: Layout) -> None:
    """A name of an old module that becomes a package must not also be one of that package's new submodules."""
    problems = []
    for package in PACKAGES:
        if package not in layout.old_present:
            continue
        path = layout.root / "tflq" / f"{package}.py"
        source = path.read_text() if path.is_file() else git(layout.root, "show", f"HEAD:tflq/{package}.py")
        exported = set(REEXPORTS.get(package, ("", ()))[1])
        clash = top_level_names(source) & (submodules(package) | (exported - top_level_names(source)))
        if clash:
            problems.append(f"tflq/{package}.py defines {sorted(clash)}, which would also name submodules of "
                            f"the new package tflq.{package}: pick other names in MOVES")
    if problems:
        raise ReshapeError("\n".join(problems))


def check_reexports_exist(root: Path) -> None:
    """Every name a package __init__ re-exports must be defined by its module (issue 9 may rename one)."""
    old_of = {new: old for old, new in MOVES.items()}
    problems = []
    for package, (module, names) in REEXPORTS.items():
        new_path = root / "tflq" / package / f"{module}.py"
        path = new_path if new_path.is_file() else root / "tflq" / f"{old_of[f'{package}/{module}']}.py"
        if not path.is_file():
            continue
        missing = sorted(set(names) - top_level_names(path.read_text()))
        if missing:
            problems.append(f"{path.relative_to(root)} no longer defines {missing}, which tflq/{package}/__init__.py "
                            "re-exports: update REEXPORTS in tools/reshape.py (and the Python API docs)")
    if problems:
        raise ReshapeError("\n".join(problems))


def check_every_module_mapped(root: Path) -> None:
    unmapped = sorted(p.name for p in (root / "tflq").glob("*.py") if p.stem not in MOVES and p.stem not in KEEP)
    if unmapped:
        raise ReshapeError(f"tflq/ holds modules with no mapping in tools/reshape.py MOVES: {', '.join(unmapped)}")


class Rewriter:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.errors: list[str] = []

    def resolve(self, parts: list[str], where: str) -> list[str]:
        """The new dotted parts (after ``tflq``) for a reference's parts."""
        head = parts[0]
        if head.startswith("__") or head in KEEP or head in NOT_MODULES:
            return parts
        if head in PACKAGES and len(parts) > 1 and parts[1] in submodules(head):
            return parts  # tflq.<package>.<submodule>: already the new layout (check_no_ambiguity makes it certain)
        if head in PACKAGES and not self.layout.is_old(head):
            # A new-layout reference: tflq.<package>[.<submodule or re-export>...]
            if len(parts) > 1 and parts[1] not in submodules(head) | set(REEXPORTS.get(head, ("", ()))[1]):
                self.errors.append(f"{where}: tflq.{'.'.join(parts[:2])}: {parts[1]!r} is neither a module of "
                                   f"tflq.{head} nor a name it re-exports")
            return parts
        if head in MOVES:
            return new_module(head).split(".") + parts[1:]
        self.errors.append(f"{where}: tflq.{'.'.join(parts)}: no mapping for tflq.{head} in tools/reshape.py")
        return parts

    def rewrite(self, text: str, path: str) -> str:
        chunks = re.split(rf"(^.*{KEEP_BEGIN}.*$[\s\S]*?^.*{KEEP_END}.*$)", text, flags=re.MULTILINE)
        return "".join(chunk if i % 2 else self._rewrite(chunk, path) for i, chunk in enumerate(chunks))

    def _rewrite(self, text: str, path: str) -> str:
        flat_module = re.fullmatch(r"tflq/\w+\.py", path) is not None
        if flat_module:
            text = RELATIVE_IMPORT.sub(
                lambda m: f"{m['indent']}from tflq{'.' + m['module'] if m['module'] else ''} import", text)
        text = FROM_TFLQ_IMPORT.sub(lambda m: self._from_tflq_import(m, path), text)
        text = DOTTED.sub(lambda m: self._dotted(m, text, path), text)
        text = FILE_PATH.sub(lambda m: self._file_path(m, text, path), text)
        if path.endswith((".py", ".md")):
            text = BACKTICKED.sub(lambda m: MOVES[m[1]] + ".py" if m[1] in MOVES else m[0], text)
        return text

    def _from_tflq_import(self, match: re.Match[str], path: str) -> str:
        names_text = re.sub(r"#[^\n]*", "", match["names"]).strip().strip("()")
        aliases = []
        for item in (part.strip() for part in names_text.split(",")):
            if item:
                name, _, alias = (word.strip() for word in item.partition(" as "))
                aliases.append((name, alias or name))
        for name, _ in aliases:
            if not self.layout.is_old(name) and not (name.startswith("__") or name in KEEP or name in PACKAGES):
                self.errors.append(f"{path}: from tflq import {name}: no mapping for tflq.{name} in tools/reshape.py")
        if not any(self.layout.is_old(name) for name, _ in aliases):
            return match[0]
        comment = match["comment"] or ""
        kept = [name if alias == name else f"{name} as {alias}" for name, alias in aliases
                if not self.layout.is_old(name)]
        by_package: dict[str, list[str]] = {}
        for name, alias in aliases:
            if self.layout.is_old(name):
                package, module = new_module(name).split(".")
                by_package.setdefault(package, []).append(module if module == alias else f"{module} as {alias}")
        lines = [f"{match['indent']}from tflq import {', '.join(kept)}{comment}"] if kept else []
        lines += [f"{match['indent']}from tflq.{package} import {', '.join(items)}{comment}"
                  for package, items in by_package.items()]
        return "\n".join(lines)

    def _dotted(self, match: re.Match[str], text: str, path: str) -> str:
        parts = match[1][1:].split(".")
        imported = IMPORTED_NAME.match(text, match.end())
        if len(parts) == 1 and parts[0] in PACKAGES and imported and imported[1] in submodules(parts[0]):
            return match[0]  # `from tflq.<package> import <submodule>`: already the new layout
        new = self.resolve(parts, f"{path}:{text.count(chr(10), 0, match.start()) + 1}")
        return "tflq." + ".".join(new)

    def _file_path(self, match: re.Match[str], text: str, path: str) -> str:
        name = match[1]
        if name in KEEP or name == "__main__":
            return match[0]
        if name in MOVES:
            return f"tflq/{MOVES[name]}.py"
        line = text.count("\n", 0, match.start()) + 1
        self.errors.append(f"{path}:{line}: tflq/{name}.py: no mapping for it in tools/reshape.py")
        return match[0]


def text_files(root: Path) -> list[str]:
    """Every tracked text file the rewrite covers: all of them but tools/ (which names the old paths on purpose)."""
    files = []
    for name in git(root, "ls-files", "-z").split("\0"):
        if not name or name.startswith("tools/") or not (root / name).is_file():
            continue
        data = (root / name).read_bytes()
        if b"\0" in data or len(data) > 4_000_000:
            continue
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        files.append(name)
    return files


def package_init(package: str) -> str:
    text = f'"""{PACKAGES[package]}"""\n'
    if package in REEXPORTS:
        module, names = REEXPORTS[package]
        text += (f"from __future__ import annotations\n\nfrom tflq.{package}.{module} import {', '.join(names)}\n\n"
                 f"__all__ = [{', '.join(repr(n) for n in names)}]\n")
    return text


@dataclass(frozen=True)
class Plan:
    moves: tuple[tuple[str, str], ...]
    writes: tuple[tuple[str, str], ...]  # (path after the moves, new text)
    creates: tuple[tuple[str, str], ...]

    @property
    def empty(self) -> bool:
        return not (self.moves or self.writes or self.creates)


def make_plan(root: Path) -> Plan:
    check_every_module_mapped(root)
    check_reexports_exist(root)
    layout = Layout.read(root)
    check_no_ambiguity(layout)
    rewriter = Rewriter(layout)
    moves = tuple((f"tflq/{old}.py", f"tflq/{new}.py") for old, new in MOVES.items()
                  if (root / "tflq" / f"{old}.py").is_file())
    for source, target in moves:
        if (root / target).exists():
            raise ReshapeError(f"both {source} and {target} exist: resolve by hand")
    moved = dict(moves)
    writes = []
    for name in text_files(root):
        text = (root / name).read_text()
        new_text = rewriter.rewrite(text, name)
        if rewriter.rewrite(new_text, name) != new_text:
            raise ReshapeError(f"{name}: a second rewrite would change it again (a bug in tools/reshape.py)")
        if new_text != text:
            writes.append((moved.get(name, name), new_text))
    if rewriter.errors:
        raise ReshapeError("\n".join(dict.fromkeys(rewriter.errors)))
    creates = [(f"tflq/{package}/__init__.py", package_init(package)) for package in PACKAGES]
    creates.append(("tflq/__main__.py", MAIN_MODULE))
    creates = [(path, text) for path, text in creates if not (root / path).exists()]
    return Plan(moves, tuple(writes), tuple(creates))


def apply(root: Path, plan: Plan) -> None:
    for source, target in plan.moves:
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        git(root, "mv", source, target)
    for path, text in plan.writes:
        (root / path).write_text(text)
    for path, text in plan.creates:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    if plan.creates:
        git(root, "add", *(path for path, _ in plan.creates))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a run would change something")
    parser.add_argument("--allow-dirty", action="store_true", help="run on a work tree with uncommitted changes")
    args = parser.parse_args(argv)
    root = Path.cwd()
    try:
        if not (root / "tflq").is_dir() or not (root / "pyproject.toml").is_file():
            raise ReshapeError("run this at the repository root (no tflq/ or pyproject.toml here)")
        plan = make_plan(root)
        if args.check:
            for source, target in plan.moves:
                print(f"would move {source} -> {target}")
            for path, _ in plan.writes:
                print(f"would rewrite {path}")
            for path, _ in plan.creates:
                print(f"would create {path}")
            print("nothing to do" if plan.empty else "the reshape is not done")
            return 0 if plan.empty else 1
        if plan.empty:
            print("nothing to do: the tree is already reshaped")
            return 0
        if git(root, "status", "--porcelain").strip() and not args.allow_dirty:
            raise ReshapeError("the work tree has uncommitted changes: commit or stash them (or --allow-dirty)")
        apply(root, plan)
    except ReshapeError as error:
        print(f"reshape: {error}", file=sys.stderr)
        return 2
    print(f"moved {len(plan.moves)} modules, rewrote {len(plan.writes)} files, created {len(plan.creates)} files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

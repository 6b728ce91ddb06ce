"""The docs stay true: generated reference up to date, links resolve, every command, option and YAML key documented
and every documented one real, shell examples parse (and a few cheap ones run, verbatim).

The hand-written pages are README.md, docs/*.md and examples/README.md; docs/reference/*.md are generated.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from tflq.cli.app import main

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "examples" / "README.md"]
LINKED_PAGES = [*PAGES, *sorted((ROOT / "docs" / "reference").glob("*.md"))]

# Flags of other tools that the pages show (make, pytest, pip, git, ruff, the benchmark and tool scripts).
OTHER_TOOLS_FLAGS = {
    "--check",  # docs/generate.py --check, tools/reshape.py --check
    "--repeat", "--repeats", "--qat",  # benchmarks/sweep.py, eval_throughput.py, qat.py
    "--strict-markers", "--strict-config",
}


# --- reading the pages -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence
    lang: str
    text: str


def blocks(page: Path) -> list[Block]:
    found, lang, start, body = [], None, 0, []
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        fence = re.match(r"^\s*```(\S*)", line)
        if fence and lang is None:
            lang, start, body = fence.group(1), number, []
        elif fence and lang is not None:
            found.append(Block(page, start, lang, "\n".join(body)))
            lang = None
        elif lang is not None:
            body.append(line)
    return found


def prose(page: Path) -> str:
    """The page without its fenced code blocks."""
    out, inside = [], False
    for line in page.read_text(encoding="utf-8").splitlines():
        if re.match(r"^\s*```", line):
            inside = not inside
            continue
        if not inside:
            out.append(line)
    return "\n".join(out)


def all_text() -> str:
    return "\n".join(page.read_text(encoding="utf-8") for page in PAGES)


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"`|\*\*?|_(?=\w)|(?<=\w)_", lambda m: "" if m.group(0) in ("`", "*", "**") else m.group(0), heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for line in prose(page).splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        base = slug(heading.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def test_slug_matches_github() -> None:
    assert slug("`tflq convert ... --eval DATA`") == "tflq-convert----eval-data"
    assert slug("Selective quantization: `--skip-layers`, `--skip-ops`") == (
        "selective-quantization---skip-layers---skip-ops"
    )
    assert slug("The `_tf/` rule") == "the-_tf-rule"
    assert slug("Quantization-aware training (`qat`)") == "quantization-aware-training-qat"


# --- 1. the generated reference ----------------------------------------------------------------------------------


def _generate_module():
    spec = importlib.util.spec_from_file_location("docs_generate", ROOT / "docs" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_reference_is_up_to_date() -> None:
    for path, text in _generate_module().generated().items():
        assert path.exists(), f"{path.relative_to(ROOT)} is missing: run python docs/generate.py"
        stale = f"{path.relative_to(ROOT)} is stale: run python docs/generate.py"
        assert path.read_text(encoding="utf-8") == text, stale


# --- 2. links and anchors ----------------------------------------------------------------------------------------


def test_every_relative_link_and_anchor_resolves() -> None:
    broken = []
    for page in LINKED_PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", prose(page)):
            if re.match(r"^[a-z]+:", target):  # https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            linked = (page.parent / file_part).resolve() if file_part else page
            if not linked.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}: no such file")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{page.relative_to(ROOT)}: {target}: no heading with that anchor")
    assert not broken, "\n".join(broken)


# --- 3. commands and options, both ways --------------------------------------------------------------------------


def commands() -> dict[str, click.Command]:
    context = click.Context(main, info_name="tflq")
    return {name: main.get_command(context, name) for name in main.list_commands(context)}  # type: ignore[misc]


def flags_of(command: click.Command) -> set[str]:
    names = {"-h", "--help"}
    for parameter in command.params:
        if isinstance(parameter, click.Option):
            names.update(parameter.opts)
            names.update(parameter.secondary_opts)
    return names


def test_every_command_and_option_is_on_a_hand_written_page() -> None:
    text = all_text()
    missing = []
    for name, command in commands().items():
        if f"tflq {name}" not in text:
            missing.append(f"command tflq {name}")
        for flag in sorted(flags_of(command) - {"-h", "--help"}):
            if flag.startswith("--") and not re.search(re.escape(flag) + r"(?![\w-])", text):
                missing.append(f"tflq {name} {flag}")
    assert "--version" in text
    assert not missing, "undocumented: " + ", ".join(missing)


def test_every_documented_flag_exists() -> None:
    known = set().union(*(flags_of(command) for command in commands().values())) | {"--version"}
    unknown = []
    for page in PAGES:
        for flag in set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", page.read_text(encoding="utf-8"))):
            if flag not in known and flag not in OTHER_TOOLS_FLAGS:
                unknown.append(f"{page.relative_to(ROOT)}: {flag}")
    assert not unknown, "documented, but no tflq command has it: " + ", ".join(sorted(unknown))


# --- 4. shell examples parse ---------------------------------------------------------------------------------------

PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]{1,}(?![a-z])")  # MODEL, DATA, FILE.yaml, NAME,... : a synopsis


def command_lines(block: Block) -> Iterator[tuple[str, list[str]]]:
    """``(line, argv after tflq)`` for each tflq command in a shell block (continuations joined)."""
    text = re.sub(r"\\\n\s*", " ", block.text)
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("$ "):
            line = line[2:]
        elif block.lang not in ("sh", "bash", "shell"):
            continue  # an output block: only its "$ tflq ..." lines are commands
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        for index, word in enumerate(words):
            if word in ("tflq", ".venv/bin/tflq") and (index == 0 or words[index - 1] in ("&&", ";", "|")):
                argv = []
                for rest in words[index + 1:]:
                    if rest in ("&&", ";", "|") or rest.startswith((">", "<", "2>")):
                        break
                    argv.append(rest)
                yield line, argv


def is_synopsis(argv: list[str]) -> bool:
    return any("[" in word or "..." in word or "|" in word or PLACEHOLDER.match(word) for word in argv)


def shell_commands() -> list[tuple[str, str, list[str]]]:
    found = []
    for page in PAGES:
        for block in blocks(page):
            for line, argv in command_lines(block):
                found.append((f"{page.relative_to(ROOT)}:{block.line}", line, argv))
    return found


def parse(argv: list[str]) -> None:
    """Parse ``tflq ARGV`` with click, without running it. Raises click.UsageError on a bad command line."""
    if not argv or argv[0].startswith("-"):
        main.make_context("tflq", list(argv))  # tflq --version, tflq --help: click exits
        return
    context = click.Context(main, info_name="tflq")
    command = main.get_command(context, argv[0])
    if command is None:
        raise click.UsageError(f"no such command {argv[0]!r}")
    command.make_context(argv[0], list(argv[1:]), parent=context)


def test_shell_examples_are_found() -> None:
    runnable = [argv for _, _, argv in shell_commands() if not is_synopsis(argv)]
    assert len(runnable) >= 25, len(runnable)
    assert ["modes"] in runnable


def test_every_tflq_example_parses() -> None:
    failures = []
    for where, line, argv in shell_commands():
        if is_synopsis(argv):
            continue
        try:
            parse(argv)
        except click.exceptions.Exit:
            pass  # --version, --help
        except click.UsageError as error:
            failures.append(f"{where}: {line}: {error.format_message()}")
    assert not failures, "\n".join(failures)


def test_the_parser_check_can_fail() -> None:
    with pytest.raises(click.UsageError):
        parse(["convert", "m.keras", "--mode", "int4"])
    with pytest.raises(click.UsageError):
        parse(["eval", "x.tflite", "--frobnicate"])
    assert is_synopsis(["convert", "MODEL", "[--mode", "MODE]..."])
    assert not is_synopsis(["convert", "sample_models/digits_cnn.keras", "--mode", "int8"])


# --- 5. YAML keys and batch files ----------------------------------------------------------------------------------


def schema() -> tuple[set[str], set[str], dict[str, set[str]]]:
    """(top-level keys, keys of defaults: and model entries, {section: its keys}) read from the code."""
    from tflq.batch import schema as batch_schema

    keys = {row["yaml"] for _, rows in batch_schema.schema_rows() for row in rows}
    sections = {}
    for key in keys:
        if "." in key:
            section, _, sub = key.partition(".")
            sections.setdefault(section, set()).add(sub)
    top = {"output_dir", "defaults", "models"}
    entry = {key for key in keys if "." not in key} - {"output_dir"} | set(sections)
    return top, entry, sections


def yaml_blocks() -> list[Block]:
    return [block for page in PAGES for block in blocks(page) if block.lang in ("yaml", "yml")]


def unknown_keys(tree: object) -> list[str]:
    top, entry, sections = schema()

    def check_entry(mapping: object, where: str) -> list[str]:
        if not isinstance(mapping, dict):
            return []
        bad = [f"{where}.{key}" for key in mapping if key not in entry]
        for key, value in mapping.items():
            if key in sections and isinstance(value, dict):
                bad += [f"{where}.{key}.{sub}" for sub in value if sub not in sections[key]]
        return bad

    if not isinstance(tree, dict):
        return []
    bad = [key for key in tree if key not in top]
    bad += check_entry(tree.get("defaults"), "defaults")
    for index, model in enumerate(tree.get("models") or []):
        bad += check_entry(model, f"models[{index}]")
    return bad


def test_yaml_blocks_use_only_schema_keys() -> None:
    found = yaml_blocks()
    assert found
    bad = []
    for block in found:
        where = f"{block.page.relative_to(ROOT)}:{block.line}"
        bad += [f"{where}: {key}" for key in unknown_keys(yaml.safe_load(block.text))]
    assert not bad, "keys the batch-file schema does not have: " + ", ".join(bad)
    assert unknown_keys({"defaults": {"calibration": {"sampels": 3}}, "modelz": []}) == [
        "modelz", "defaults.calibration.sampels"
    ]


def test_complete_batch_files_load(tmp_path: Path) -> None:
    from tflq.batch.config import load_config

    complete = [block for block in yaml_blocks() if "models" in (yaml.safe_load(block.text) or {})]
    assert complete
    (tmp_path / "configs").mkdir()
    (tmp_path / "sample_models").symlink_to(ROOT / "sample_models")
    for index, block in enumerate(complete):
        path = tmp_path / "configs" / f"doc{index}.yaml"
        path.write_text(block.text, encoding="utf-8")
        config = load_config(path)
        assert config.models, f"{block.page.relative_to(ROOT)}:{block.line}"


# --- 6. a few cheap examples, run verbatim ---------------------------------------------------------------------------


def shown_output(page: str, command: str, whole_line: bool = False) -> list[str]:
    """The lines of the block that follows the sh block holding ``command`` (or just it) on ``page``."""
    found = blocks(ROOT / page)
    for index, block in enumerate(found):
        lines = [line.strip() for line in block.text.splitlines()]
        if block.lang == "sh" and (lines == [command] if whole_line else any(x.startswith(command) for x in lines)):
            return found[index + 1].text.splitlines()
    raise AssertionError(f"{page}: no sh block with {command!r}")


@pytest.fixture()
def in_scratch_repo(tmp_path: Path) -> Iterator[Path]:
    """A folder holding sample_models/ (linked) as the current directory: the docs' commands write into it."""
    (tmp_path / "sample_models").symlink_to(ROOT / "sample_models")
    previous = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(previous)


def run_verbatim(line: str):
    argv = shlex.split(line, comments=True)
    assert argv[0] == "tflq"
    return CliRunner().invoke(main, argv[1:])


def test_tflq_modes_prints_what_convert_md_shows() -> None:
    page = blocks(ROOT / "docs" / "convert.md")
    shown = next(block for block in page if block.text.startswith("float32  float32 baseline"))
    result = run_verbatim("tflq modes")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == shown.text.splitlines()


def _without_timings(line: str) -> str:
    return " ".join(re.sub(r"\d+\.\d+ s\b", "<t> s", line).split())


@pytest.mark.slow
def test_float32_convert_inspect_as_the_docs_show(in_scratch_repo: Path) -> None:
    command = "tflq convert sample_models/digits_cnn.keras"
    shown = shown_output("docs/convert.md", command, whole_line=True)
    result = run_verbatim(command)
    assert result.exit_code == 0, result.output
    printed = [_without_timings(line) for line in result.output.splitlines()]
    assert printed == [_without_timings(line) for line in shown]
    assert (in_scratch_repo / "build" / "digits_cnn.float32.tflite").exists()

    command = "tflq inspect build/digits_cnn.float32.tflite"
    shown = shown_output("docs/measure.md", command)
    result = run_verbatim(command)
    assert result.exit_code == 0, result.output
    printed = [" ".join(line.split()) for line in result.output.splitlines()]
    for line in shown:
        expected = " ".join(line.split())
        if expected.endswith("..."):  # shortened in the docs: the rest depends on the TensorFlow version
            assert any(p.startswith(expected[:-3]) for p in printed), (line, result.output)
        else:
            assert expected in printed, (line, result.output)


def test_batch_error_example_is_the_loaders_message(tmp_path: Path) -> None:
    """docs/batch.md's example of a validation error is what the loader says for that mistake."""
    from tflq.batch.config import load_config
    from tflq.errors import ConfigError

    text = (ROOT / "docs" / "batch.md").read_text(encoding="utf-8")
    shown = re.search(r"Error: configs/x\.yaml:(\d+): (unknown key 'modez' in a model entry[^\n]*)", text)
    assert shown, "docs/batch.md lost its example error"
    (tmp_path / "sample_models").symlink_to(ROOT / "sample_models")
    (tmp_path / "configs").mkdir()
    lines = ["models:"] + ["  - name: cnn", "    path: ../sample_models/digits_cnn.keras"] + [""] * 20
    lines[int(shown.group(1)) - 1] = "    modez: [float32]"
    path = tmp_path / "configs" / "x.yaml"
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value).replace(str(path), "configs/x.yaml")
    prefix = shown.group(2).split("...")[0]
    assert message.startswith(f"configs/x.yaml:{shown.group(1)}: {prefix}"), message



def test_architecture_names_every_private_call_outside_tf() -> None:
    """docs/architecture.md lists the modules outside tflq/_tf/ that still touch private TF/LiteRT APIs."""
    private = re.compile(r"\._get_ops_details\(|\._interpreter\.|tensorflow\.python\b|tensorflow\.lite\.python\b")
    offenders = {
        str(path.relative_to(ROOT / "tflq"))
        for path in (ROOT / "tflq").rglob("*.py")
        if "_tf" not in path.relative_to(ROOT / "tflq").parts and private.search(path.read_text(encoding="utf-8"))
    }
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text[text.index("## The `_tf/` rule"):text.index("## Old module -> new module")]
    named = set(re.findall(r"`((?:convert|debug|qat|measure|model|batch|report|cli)/\w+\.py)`", section))
    assert named == offenders, f"docs/architecture.md names {sorted(named)}; the code has {sorted(offenders)}"


# Named in the docs on purpose without existing: each page says so next to the name.
NOT_IN_THE_CODE = {
    "configs/example.yaml",  # docs/batch.md: "This file is not shipped"
    "configs/x.yaml",  # docs/batch.md: the file of an example error message
    "tflq.batch.schema.schema_rows",  # the YAML reference's source
    "tflq/TensorFlow",  # examples/README.md: "tflq/TensorFlow versions", prose
}


def _resolves(dotted: str) -> bool:
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(target, name):
                return False
            target = getattr(target, name)
        return True
    return False


def test_every_python_name_and_file_path_in_the_docs_exists() -> None:
    """`tflq.x.y` names (modules, classes, functions) and repository file paths written in the pages exist."""
    missing = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        if page.name == "architecture.md":  # the old -> new table: the old paths are gone, the new ones must exist
            text, _, table = text.partition("## Old module -> new module")
            for row in re.findall(r"^\| `tflq/[^|]*\| `(tflq/[\w/]+\.py)` \|$", table, flags=re.M):
                if not (ROOT / row).exists():
                    missing.append(f"{page.relative_to(ROOT)}: {row}")
        for dotted in set(re.findall(r"(?<![\w/.])tflq(?:\.[A-Za-z_]\w*)+", text)):
            is_file_name = dotted.endswith((".yaml", ".tflite", ".keras", ".md", ".json"))  # tflq.yaml
            if not is_file_name and dotted not in NOT_IN_THE_CODE and not _resolves(dotted):
                missing.append(f"{page.relative_to(ROOT)}: {dotted}")
        folders = r"(?:tflq|tests|tools|benchmarks|sample_models|configs)"
        for path in set(re.findall(r"(?<![\w/.])(" + folders + r"/[\w/.-]*\w)(?![\w<])", text)):
            if path not in NOT_IN_THE_CODE and not (ROOT / path).exists():
                missing.append(f"{page.relative_to(ROOT)}: {path}")
    assert not missing, "named in the docs, missing in the code: " + ", ".join(sorted(missing))


PAGE_COMMAND = {"convert.md": "convert", "batch.md": "run", "measure.md": "eval", "debug.md": "debug"}


def option_tables() -> dict[str, set[str]]:
    """{command: the flags in the first column of its option tables}, a table belonging to the command its nearest
    heading names (``## `tflq auto` ``), else to its page's command."""
    found: dict[str, set[str]] = {}
    for page in PAGES:
        if page.name not in PAGE_COMMAND:
            continue
        command = PAGE_COMMAND[page.name]
        for line in prose(page).splitlines():
            heading = re.match(r"^#{1,6} .*?tflq (\w+)", line)
            if heading and heading.group(1) in commands():
                command = heading.group(1)
            elif line.startswith("## "):
                command = PAGE_COMMAND[page.name]
            row = re.match(r"^\| ([^|]*(?:\\\|[^|]*)*) \|", line)
            if row and "--" in row.group(1) and line.count("|") >= 4:
                found.setdefault(command, set()).update(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", row.group(1)))
    return found


def test_option_tables_match_their_command() -> None:
    """Each command's option table lists only its own options, and all of them."""
    problems = []
    tables = option_tables()
    for name, command in commands().items():
        own = {flag for flag in flags_of(command) if flag.startswith("--")} - {"--help"}
        if name not in tables:
            if own:
                problems.append(f"tflq {name}: no option table")
            continue
        problems += [f"tflq {name}: table has {flag}, the command does not" for flag in sorted(tables[name] - own)]
        problems += [f"tflq {name}: {flag} is not in its table" for flag in sorted(own - tables[name])]
    assert not problems, "\n".join(problems)


def test_batch_key_table_lists_every_yaml_key() -> None:
    """docs/batch.md's key table has every key of the schema (but the defaults/models containers), only those."""
    top, entry, sections = schema()
    expected = (top - {"defaults", "models"}) | (entry - set(sections))
    expected |= {f"{section}.{key}" for section, keys in sections.items() for key in keys}
    text = prose(ROOT / "docs" / "batch.md")
    table = text[text.index("| key | value | built-in default | meaning |"):]
    table = table[:table.index("\n\n")]
    documented = set(re.findall(r"^\| `([\w.]+)` \|", table, flags=re.M))
    assert documented == expected, (sorted(documented - expected), sorted(expected - documented))

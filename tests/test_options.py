"""Settings declared once (tflq.options): the same declaration drives click, the YAML checks, the docs and keys."""
from __future__ import annotations

from dataclasses import dataclass

import click
import pytest
from click.testing import CliRunner

from tflq import options as opts
from tflq.cli import flags as cli_flags
from tflq.errors import ConfigError


@dataclass(frozen=True)
class Example:
    samples: int = opts.setting(200, opts.PositiveInt(), "samples to use", flag="--samples")
    scale: str = opts.setting("unit", opts.Choice(("unit", "raw")), "pixel scale", flag="--scale")
    rate: float = opts.setting(1e-3, opts.Number(0, 1, open_min=True, open_max=True), "learning rate", flag="--rate")
    names: tuple[str, ...] = opts.setting((), opts.Names(), "layers left in float", flag="--names")
    logits: bool | None = opts.setting(None, opts.Flag(optional=True), "outputs are logits", flag="--logits")
    strict: bool = opts.setting(False, opts.Flag(), "strict", flag="--strict")
    data: str | None = opts.setting(None, opts.Text(optional=True, path=True), "data file", yaml="data_file")
    hidden: int = opts.setting(1, opts.PositiveInt(), "not on the command line")
    cli_only: bool = opts.setting(False, opts.Flag(), "not in YAML", flag="--cli-only", yaml=None)
    plain: int = 7  # no declaration: not a setting


def _command() -> click.Command:
    seen: dict[str, object] = {}

    @click.command()
    @cli_flags.click_options(Example)
    def command(**parsed: object) -> None:
        given = cli_flags.from_flags(Example, parsed)
        seen["given"] = given
        seen["options"] = opts.build(Example, given)
        seen["rest"] = parsed

    command.seen = seen  # type: ignore[attr-defined]
    return command


def test_flags_left_out_keep_the_declared_defaults() -> None:
    command = _command()
    result = CliRunner().invoke(command, [], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert command.seen["given"] == {}  # type: ignore[attr-defined]
    assert command.seen["options"] == Example()  # type: ignore[attr-defined]
    assert command.seen["rest"] == {}  # type: ignore[attr-defined]


def test_flags_given_override_and_lists_split_on_commas() -> None:
    command = _command()
    arguments = ["--samples", "5", "--scale", "raw", "--names", "a,b", "--names", "c", "--no-logits", "--strict"]
    result = CliRunner().invoke(command, arguments, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    built = command.seen["options"]  # type: ignore[attr-defined]
    got = (built.samples, built.scale, built.names, built.logits, built.strict)
    assert got == (5, "raw", ("a", "b", "c"), False, True)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--samples", "0"], "0 is not in the range x>=1"),
        (["--scale", "ra"], "'ra' is not one of 'unit', 'raw'"),
        (["--rate", "1"], "1.0 is not in the range 0<x<1"),
    ],
)
def test_click_checks_the_declared_ranges(arguments: list[str], message: str) -> None:
    result = CliRunner().invoke(_command(), arguments, catch_exceptions=False)
    assert result.exit_code == 2
    assert message in result.output


def test_help_shows_declared_defaults_and_only_flagged_settings() -> None:
    result = CliRunner().invoke(_command(), ["--help"], catch_exceptions=False)
    assert "samples to use  [default: 200]" in result.output
    assert "--logits / --no-logits" in result.output
    assert "--hidden" not in result.output and "data file" not in result.output


def test_yaml_section_is_checked_against_the_same_declarations() -> None:
    where = lambda key: f"x.yaml:3: sec.{key}"  # noqa: E731
    read = opts.read_section(Example, {"samples": 10, "data_file": "d.npz", "hidden": 2}, where, resolve_path=str.upper)
    assert read == {"samples": 10, "data": "D.NPZ", "hidden": 2}
    with pytest.raises(ConfigError, match=r"unknown key 'sec.sample' \(did you mean 'samples'\?\)"):
        opts.read_section(Example, {"sample": 1}, where, section="sec")
    with pytest.raises(ConfigError, match=r"^x.yaml:3: sec.samples: expected a positive integer, found an integer 0$"):
        opts.read_section(Example, {"samples": 0}, where)
    with pytest.raises(ConfigError, match=r"expected true or false, found a string 'yes'"):
        opts.read_section(Example, {"strict": "yes"}, where)
    with pytest.raises(ConfigError, match=r"expected a number between 0 and 1 \(exclusive\), found a number nan"):
        opts.read_section(Example, {"rate": float("nan")}, where)
    with pytest.raises(ConfigError, match="unknown key"):
        opts.read_section(Example, {"plain": 1}, where)  # undeclared fields are not settings
    with pytest.raises(ConfigError, match="unknown key"):
        opts.read_section(Example, {"cli_only": True}, where)


def test_docs_rows_and_cache_values_come_from_the_declarations() -> None:
    rows = {row["yaml"]: row for row in opts.describe(Example, "sec")}
    assert rows["sec.samples"] == {
        "yaml": "sec.samples", "flag": "--samples", "default": "200", "type": "a positive integer",
        "meaning": "samples to use",
    }
    assert rows["sec.data_file"]["flag"] == "" and rows["sec.hidden"]["default"] == "1"
    assert rows[""]["flag"] == "--cli-only"  # a CLI-only setting has no YAML key
    assert opts.values(Example(names=("a",)), ["names", "samples"]) == {"samples": 200, "names": ["a"]}


def test_mutable_defaults_are_refused() -> None:
    with pytest.raises(TypeError):
        opts.setting([], opts.Names(), "x")

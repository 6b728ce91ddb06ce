"""report.html (``tflq run``) and ``tflq debug -o report.html``, opened in real headless Chromium over the DevTools
protocol (tests/chromium_cdp.py): the table and the SVG plots render, sorting works by a real mouse click, nothing
is fetched, no console errors, and a model named like markup stays text."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tests.chromium_cdp import Browser, find_chromium
from tests.sample_paths import SAMPLES
from tflq.cli.app import main

slow = pytest.mark.slow  # a real batch run or debug run (the batch: about a minute on 2 busy cores)

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium on PATH: install the Debian package `chromium` (.ci/run installs it when missing)",
)
# A legal model name (no slash) that is markup: escaped, it is text; unescaped, it would set window.pwned.
EVIL = "<img src=x onerror=window.pwned=1>"
SVG_NAMESPACE = "http://www.w3.org/2000/svg"


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, small ``tflq run``: the sample CNN (float32, dynamic, int8 with both I/O types, and an auto search)
    and the same CNN under the markup name with a size gate that float32 fails."""
    folder = tmp_path_factory.mktemp("html_batch")
    with np.load(SAMPLES / "digits_train.npz") as archive:
        np.savez(folder / "calib.npz", x=archive["x"][:60])
    config = folder / "batch.yaml"
    config.write_text(
        f"""\
output_dir: out
defaults:
  modes: [float32, dynamic, int8]
  io_types: [float32, int8]
  calibration: {{data: calib.npz, samples: 40}}
  evaluation: {{data: {SAMPLES}/digits_test.npz, samples: 120}}
  latency: {{runs: 20, warmup_runs: 2}}
  gates: {{max_accuracy_drop: 2.0}}
models:
  - name: cnn
    path: {SAMPLES}/digits_cnn.keras
    auto: {{max_drop: 1.0}}
  - name: "{EVIL}"
    path: {SAMPLES}/digits_cnn.keras
    modes: [float32, int8]
    io_types: [float32]
    gates: {{max_size_bytes: 30000}}
"""
    )
    result = CliRunner().invoke(main, ["run", str(config), "--json"], catch_exceptions=False)
    assert result.exit_code != 0, result.output  # the markup model's float32 fails its size gate
    out = folder / "out"
    rows = json.loads(result.stdout)
    assert {row["gate"] for row in rows} == {"pass", "fail"}
    assert (out / "report.html").is_file()
    return out


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no chromium")
    with Browser(CHROMIUM, width=1280, height=900) as opened:
        yield opened


def rows_of(out: Path) -> list[dict]:
    return json.loads((out / "report.json").read_text())


def distinct_colours(png: Path) -> int:
    from PIL import Image

    with Image.open(png) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    return len(colours or ())


@slow
def test_report_html_is_self_contained_and_escapes_user_strings(batch):
    text = (batch / "report.html").read_text()
    urls = set(re.findall(r"https?://[^\s\"'<>]+", text))
    assert urls == {SVG_NAMESPACE}, urls  # the SVG namespace is a name, never fetched
    assert "<link" not in text and "@import" not in text and "url(" not in text
    assert not re.search(r"\ssrc=", text.replace("&lt;img src=x", ""))
    assert EVIL not in text and "&lt;img src=x onerror=window.pwned=1&gt;" in text
    assert text.count("<script>") == 1  # the page's own sorting script


@slow
@needs_chromium
def test_report_html_renders_in_headless_chromium(batch, browser, tmp_path):
    rows = rows_of(batch)
    browser.open(batch / "report.html")
    assert browser.problems() == []
    assert browser.requests() == [(batch / "report.html").resolve().as_uri()]  # nothing else was fetched
    shot = browser.screenshot(tmp_path / "report.png")
    # Measured on this report: a 1280x2061 PNG of about 230 KB with about 1,200 distinct colours (antialiased text,
    # coloured cells, SVG plots). A page holding only a two-cell table of text: 6 KB and 138 colours; a blank page:
    # 1 colour. The thresholds sit between, with a factor of two or more either side.
    assert shot.stat().st_size > 50_000
    assert distinct_colours(shot) > 500

    headers = browser.evaluate("[...document.querySelectorAll('#comparison thead th')].map(h => h.textContent)")
    markdown_header = (batch / "report.md").read_text().splitlines()[2]
    assert headers == [cell.strip() for cell in markdown_header.strip("|").split("|")]
    table = browser.evaluate(
        "[...document.querySelectorAll('#comparison tbody tr')].map(r => [...r.cells].map(c => c.textContent))"
    )
    assert [(line[0], line[1]) for line in table] == [(row["model"], row["variant"]) for row in rows]
    assert any(line[0] == "cnn" and line[1].startswith("auto: ") for line in table)
    assert browser.evaluate("document.querySelectorAll('#comparison td.gate-pass').length") == sum(
        row["gate"] == "pass" for row in rows
    )
    failing = browser.evaluate("[...document.querySelectorAll('#comparison td.gate-fail')].map(c => c.textContent)")
    assert len(failing) == 1 and failing[0].startswith("FAIL: ") and "30000" in failing[0].replace(",", "")
    assert browser.evaluate("getComputedStyle(document.querySelector('td.gate-fail')).backgroundColor") != (
        browser.evaluate("getComputedStyle(document.querySelector('td.gate-pass')).backgroundColor")
    )

    # The markup model name rendered as text and ran nothing.
    assert browser.evaluate("typeof window.pwned") == "undefined"
    assert browser.evaluate("document.querySelectorAll('#comparison img').length") == 0
    assert EVIL in {line[0] for line in table}

    plots = browser.evaluate(
        "[...document.querySelectorAll('svg.pareto')].map(s => ({title: s.querySelector('title').textContent,"
        " width: s.getBoundingClientRect().width, height: s.getBoundingClientRect().height,"
        " markers: s.querySelectorAll('circle, path').length, front: s.querySelectorAll('polyline').length,"
        " labels: [...s.querySelectorAll('text.point-label')].map(t => t.textContent)}))"
    )
    assert [plot["title"] for plot in plots] == [
        "cnn: accuracy vs size", "cnn: accuracy vs latency", f"{EVIL}: accuracy vs size", f"{EVIL}: accuracy vs latency"
    ]
    for plot in plots:
        assert plot["width"] > 300 and plot["height"] > 200 and plot["markers"] >= 2, plot
    by_title = {plot["title"]: plot for plot in plots}
    assert set(by_title["cnn: accuracy vs size"]["labels"]) == {row["variant"] for row in rows if row["model"] == "cnn"}
    assert set(by_title["cnn: accuracy vs latency"]["labels"]) == {
        row["variant"] for row in rows if row["model"] == "cnn" and row["latency_ms"]
    }

    auto = next(row["auto"] for row in rows if row.get("auto"))
    trials = browser.evaluate("[...document.querySelectorAll('table.auto')].map(t => t.tBodies[0].rows.length)")
    assert trials and set(trials) == {len(auto["trials"])}
    chosen = browser.evaluate("document.querySelector('table.auto tr.trial-chosen td').textContent")
    assert chosen == auto["chosen"]

    details = browser.evaluate("[...document.querySelectorAll('details summary')].map(s => s.textContent)")
    assert len(details) == len(rows) and details[0].startswith("cnn float32")
    # Open the int8 variant's details: XNNPACK partitions and the latency box render.
    int8 = next(index for index, row in enumerate(rows) if row["model"] == "cnn" and row["variant"] == "int8")
    browser.evaluate(f"document.getElementById('variant-{int8}').open = true")
    text = browser.evaluate(f"document.getElementById('variant-{int8}').innerText")
    delegation = rows[int8]["xnnpack"]
    delegated = f"{delegation['delegated_ops']}/{delegation['total_ops']} ops delegated in {delegation['partitions']}"
    assert delegated in text
    assert "p99" in text and "Ops left in float: none." in text
    box = browser.evaluate(
        f"(() => {{ const r = document.querySelector('#variant-{int8} svg.latency').getBoundingClientRect();"
        " return [r.width, r.height]; })()"
    )
    assert box[0] > 100 and box[1] > 20
    assert browser.problems() == []


@slow
@needs_chromium
def test_clicking_a_header_sorts_the_table_numerically(batch, browser):
    browser.open(batch / "report.html")

    def click_header(name: str) -> None:
        x, y = browser.evaluate(
            f"(() => {{ const h = document.querySelector('#comparison th[data-col=\"{name}\"]');"
            " const r = h.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        browser.click(x, y)

    def column(name: str) -> list[str]:
        return browser.evaluate(
            f"(() => {{ const i = [...document.querySelectorAll('#comparison th')].findIndex(h => h.dataset.col === "
            f"'{name}'); return [...document.querySelectorAll('#comparison tbody tr')].map(r => "
            "r.cells[i].getAttribute('data-sort') || r.cells[i].textContent); })()"
        )

    click_header("Size")
    sizes = [float(value) for value in column("Size")]
    assert sizes == sorted(sizes) and len(set(sizes)) > 2
    assert browser.evaluate("document.querySelector('th[data-col=\"Size\"]').getAttribute('aria-sort')") == "ascending"
    click_header("Size")
    assert [float(value) for value in column("Size")] == sorted(sizes, reverse=True)
    # Text columns sort as text; p50 ms sorts by the figure (the auto row has none: it goes last).
    click_header("Variant")
    assert column("Variant") != [row["variant"] for row in rows_of(batch)]
    assert browser.evaluate(
        "(() => { const v = [...document.querySelectorAll('#comparison tbody tr')].map(r => r.cells[1].textContent);"
        " return v.every((text, i) => i === 0 || v[i - 1].localeCompare(text) <= 0); })()"
    )
    click_header("p50 ms")
    p50 = column("p50 ms")
    timed = [float(value) for value in p50 if value]
    assert timed == sorted(timed) and p50[len(timed):] == [""] * (len(p50) - len(timed))
    assert browser.problems() == []


@needs_chromium
def test_the_console_check_catches_script_errors_and_fetches(browser, tmp_path):
    """The checks above can fail: a page with a script error, a console.error and a remote image is caught, and the
    report's Content-Security-Policy blocks a remote image even if one slipped into the page."""
    from tflq.report.html import page

    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><body><script>console.error('on purpose'); undefinedFunction();</script>"
        '<img src="http://127.0.0.1:9/remote.png"></body></html>'
    )
    browser.open(bad)
    problems = browser.problems()
    assert any("undefinedFunction" in problem for problem in problems), problems
    assert any("on purpose" in problem for problem in problems), problems
    assert "http://127.0.0.1:9/remote.png" in browser.requests()

    blocked = tmp_path / "blocked.html"
    blocked.write_text(page("t", '<img src="http://127.0.0.1:9/remote.png">'))
    browser.open(blocked)
    browser.wait_for("Network.loadingFailed")
    assert "http://127.0.0.1:9/remote.png" in browser.requests()
    assert "http://127.0.0.1:9/remote.png" not in browser.requests(blocked=False)
    assert any("Content Security Policy" in problem for problem in browser.problems()), browser.problems()

    injected = tmp_path / "injected.html"
    injected.write_text(page("t", "<script>window.injected = 1</script><img src=x onerror='window.injected = 2'>"))
    browser.open(injected)
    assert browser.evaluate("typeof window.injected") == "undefined"  # only the page's own script (by hash) runs
    assert any("Content Security Policy" in problem for problem in browser.problems()), browser.problems()


@slow
@needs_chromium
def test_debug_html_has_the_sqnr_chart_and_the_ranking(browser, tmp_path):
    report = tmp_path / "debug.html"
    result = CliRunner().invoke(
        main,
        [
            "debug", str(SAMPLES / "digits_cnn.keras"), "--calib", str(SAMPLES / "digits_train.npz"),
            "--calib-samples", "40", "--data", str(SAMPLES / "digits_test.npz"), "--eval-samples", "120",
            "--layer-samples", "20", "--top", "1", "-o", str(report),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    browser.open(report)
    assert browser.problems() == []
    assert browser.requests() == [report.resolve().as_uri()]
    ranking = browser.evaluate(
        "[...document.querySelectorAll('#ranking tbody tr')].map(r => r.cells[1].textContent)"
    )
    bars = browser.evaluate(
        "[...document.querySelectorAll('svg.sqnr rect')].map(r => [r.querySelector('title').textContent,"
        " r.getBoundingClientRect().height])"
    )
    assert ranking and len(bars) == len(ranking)
    assert {title.split(":")[0] for title, _ in bars} == set(ranking)
    assert all(height > 0 for _, height in bars)
    assert browser.evaluate("document.querySelectorAll('svg.sqnr rect[fill=\"#d62728\"]').length") == 1
    assert "top-1 accuracy on 120 sample(s)" in browser.evaluate("document.body.innerText")


@needs_chromium
def test_a_failed_variant_and_markup_in_errors_render_as_text(browser, tmp_path):
    """A variant that failed (its error holds markup, its figures are missing) gets a red row and its error as text;
    the page still renders with no console error."""
    from tflq.report.html import render_html
    from tflq.report.render import batch_columns, batch_notes

    rows = [
        {
            "model": "m", "variant": "float32", "mode": "float32", "status": "ok", "size_bytes": 2048,
            "size_ratio": 1.0, "accuracy": {"top1": 0.9}, "accuracy_drop": 0.0, "gate": "pass", "gate_failures": [],
            "latency_ms": {"min": 0.1, "p50": 0.2, "p90": 0.3, "p99": 0.35, "max": 0.4, "mean": 0.22, "cv": 0.1,
                           "runs": 5, "warmup_runs": 1, "noisy": False},
            "xnnpack": {"enabled": True, "delegated_ops": 3, "total_ops": 4, "partitions": 1,
                        "undelegated_op_types": ["<b>OP</b>"]},
            "warnings": ["<script>window.pwned = 1</script>"],
        },
        {"model": "m", "variant": "int8", "mode": "int8", "status": "error", "gate": "pass", "gate_failures": [],
         "error": "<script>window.pwned = 2</script> could not convert", "latency_ms": None, "size_bytes": None},
    ]
    path = tmp_path / "report.html"
    path.write_text(render_html(rows, columns=batch_columns(rows), notes=batch_notes(rows)))
    browser.open(path)
    assert browser.problems() == []
    assert browser.evaluate("typeof window.pwned") == "undefined"
    assert browser.evaluate("document.querySelectorAll('script').length") == 1
    assert browser.evaluate("[...document.querySelectorAll('#comparison tbody tr')].map(r => r.className)") == [
        "", "error"
    ]
    text = browser.evaluate("document.body.innerText")
    assert "m int8: error: <script>window.pwned = 2</script> could not convert" in text
    assert "m float32: <script>window.pwned = 1</script>" in text
    # Size and latency plots, one point each: the failed variant has none.
    assert browser.evaluate("[...document.querySelectorAll('svg.pareto')].map(s => s.querySelectorAll('circle')"
                            ".length)") == [1, 1]
    browser.evaluate("document.getElementById('variant-0').open = true")
    assert "on the built-in kernels: <b>OP</b>" in browser.evaluate("document.getElementById('variant-0').innerText")
    # The page's own script runs under its Content-Security-Policy: clicking "Size" sorts (the failed row, with no
    # size, last), and a link to a variant opens its details.
    browser.evaluate("document.querySelector('th[data-col=\"Size\"]').click()")
    assert browser.evaluate("document.querySelector('th[data-col=\"Size\"]').getAttribute('aria-sort')") == (
        "ascending"
    )
    browser.evaluate("document.querySelector('th[data-col=\"Size\"]').click()")
    order = browser.evaluate("[...document.querySelectorAll('#comparison tbody tr')].map(r => r.cells[1].textContent)")
    assert order == ["float32", "int8"]  # descending, and the empty size still last
    browser.evaluate("document.querySelectorAll('#comparison a')[1].click()")
    assert browser.evaluate("document.getElementById('variant-1').open") is True
    assert browser.problems() == []


def test_plot_ticks_and_cell_sort_keys():
    """Log-scale ticks keep 1-2-5 below 1 too; cells sort by the row's figure (bytes, ms), not by their text."""
    from tflq.report.html import render_html, sort_key
    from tflq.report.plot import _log_ticks
    from tflq.report.render import batch_columns

    assert _log_ticks(0.0026, 0.19) == [0.005, 0.01, 0.02, 0.05, 0.1]
    assert _log_ticks(12.2, 48.4) == [20.0, 30.0]
    assert _log_ticks(0.0031, 0.0035) == [0.0031, 0.0035]  # no round tick inside: the two ends
    small, large = {"size_bytes": 900}, {"size_bytes": 1_258_291}
    assert sort_key("Size", small, "900 B") < sort_key("Size", large, "1.2 MB")
    assert sort_key("Accuracy", {}, "MAE 0.125") == 0.125
    assert sort_key("Variant", {}, "int8.int8") is None  # text
    # Only failed rows: no plot, one sentence instead, and no crash.
    failed = [{"model": "m", "variant": "int8", "status": "error", "error": "boom", "gate_failures": []}]
    text = render_html(failed, columns=batch_columns(failed))
    assert "no plot" in text and "<svg" not in text and "error: boom" in text

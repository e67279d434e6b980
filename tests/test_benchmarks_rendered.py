"""BENCHMARKS.md's generated tables match the recorded results (benchmarks/render.py --check, in process)."""

import json

import pytest
from helpers import ROOT, benchmark_modules

render, columns, record = benchmark_modules("render", "columns", "record")


def test_benchmarks_md_tables_match_the_recorded_results():
    text = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    stale = render.stale_blocks(text, ROOT / "benchmarks" / "results", ROOT)
    assert not stale, f"{stale} differ from benchmarks/results: run python benchmarks/render.py"


@pytest.fixture
def recorded(tmp_path):
    """A results file of area "demo" with two rows, and a table spec with a spread, a ratio to a reference row."""
    results = tmp_path / "results"
    results.mkdir()
    rows = [
        {"engine": "ours", "tps": {"median": 120.0, "min": 110.0, "max": 130.0, "n": 3}},
        {"engine": "peer", "tps": {"median": 60.0, "min": 59.0, "max": 61.0, "n": 3}, "peer": True},
    ]
    (results / "demo.json").write_text(
        json.dumps(
            {
                "commit": "abcdef1234567",
                "dirty": False,
                "date": "2026-12-01T00:00:00Z",
                "machine": {"cpu": "Test CPU", "threads": 2},
                "summary": {"speed": rows},
            }
        )
    )
    tables = {
        "demo": {
            "speed": (
                columns.Column("engine", "engine"),
                columns.Column("tokens/s", "tps", ".1f"),
                columns.Ratio("vs peer", "tps", "tps", lambda row, other: other.get("peer")),
            )
        }
    }
    return results, tables


def test_render_fills_a_block_and_check_then_passes(tmp_path, recorded):
    results, tables = recorded
    text = "# Title\n\n<!-- results:demo:speed -->\nold figures\n<!-- /results -->\n\nprose after\n"
    rendered = render.render_markdown(text, results, tmp_path, tables)
    assert "| ours | 120.0 (110.0–130.0) | 2.00 |" in rendered
    assert "| peer | 60.0 (59.0–61.0) | 1.00 |" in rendered
    assert "`results/demo.json`: commit abcdef1234" in rendered
    assert rendered.startswith("# Title\n\n") and rendered.endswith("prose after\n")
    assert render.stale_blocks(rendered, results, tmp_path, tables) == []
    assert render.render_markdown(rendered, results, tmp_path, tables) == rendered


def test_check_fails_on_a_hand_edited_figure_or_new_results(tmp_path, recorded):
    results, tables = recorded
    rendered = render.render_markdown("<!-- results:demo:speed -->\n<!-- /results -->\n", results, tmp_path, tables)
    assert render.stale_blocks(rendered.replace("120.0 (", "125.0 ("), results, tmp_path, tables) == ["demo:speed"]
    data = json.loads((results / "demo.json").read_text())
    data["summary"]["speed"][0]["tps"]["median"] = 121.0
    (results / "demo.json").write_text(json.dumps(data))
    assert render.stale_blocks(rendered, results, tmp_path, tables) == ["demo:speed"]


def test_unknown_tables_and_missing_results_are_errors(tmp_path, recorded):
    results, tables = recorded
    with pytest.raises(render.RenderError, match="no table spec"):
        render.render_markdown("<!-- results:demo:nope -->\n<!-- /results -->\n", results, tmp_path, tables)
    with pytest.raises(render.RenderError, match="does not exist"):
        render.render_markdown("<!-- results:demo:speed -->\n<!-- /results -->\n", tmp_path, tmp_path, tables)


def test_figures_over_seeds_show_mean_and_std_and_rank_only_beyond_the_spread():
    a, b, c = record.over_seeds([3.0, 3.2, 3.4]), record.over_seeds([3.5, 3.7, 3.9]), record.over_seeds([3.3, 3.5])
    assert columns.format_value(a, ".2f") == "3.20 ± 0.20"
    assert columns.median(a) == pytest.approx(3.2)
    assert record.separated(a, b) and not record.separated(a, c)
    fast, slow, close = record.spread([1.0, 1.1, 1.2]), record.spread([1.3, 1.5]), record.spread([1.15, 1.4])
    assert record.separated(fast, slow) and not record.separated(fast, close)


def test_a_partial_run_keeps_the_other_tables_with_their_own_provenance(tmp_path, monkeypatch):
    path = tmp_path / "demo.json"
    monkeypatch.setattr(record, "git_state", lambda: {"commit": "a" * 40, "dirty": False})
    record.record("demo", {"one": {"x": 1}}, {"one": [1.0]}, {"one": [{"v": 1}]}, path)
    monkeypatch.setattr(record, "git_state", lambda: {"commit": "b" * 40, "dirty": True})
    record.record("demo", {"two": {"y": 2}}, {"two": [2.0]}, {"two": [{"v": 2}]}, path, keep_others=True)
    data = json.loads(path.read_text())
    assert data["summary"] == {"one": [{"v": 1}], "two": [{"v": 2}]}
    assert data["settings"] == {"one": {"x": 1}, "two": {"y": 2}} and data["raw"] == {"one": [1.0], "two": [2.0]}
    assert "commit aaaaaaaaaa," in render.source_line(data, "one", [], "demo.json")
    assert "commit bbbbbbbbbb with uncommitted changes" in render.source_line(data, "two", [], "demo.json")
    record.record("demo", {"two": {"y": 3}}, {"two": [3.0]}, {"two": [{"v": 3}]}, path)
    assert set(json.loads(path.read_text())["summary"]) == {"two"}  # without keep_others a record stands alone

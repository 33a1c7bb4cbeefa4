"""attnbook.seeds and the `make seeds` runner (tools/seeds.py)."""

import json

import nbformat
import pytest
import torch

from attnbook.seeds import SEED_STRIDE, record_metric, seed_offset, seed_spread, seeded, summarize
from attnbook.train import set_seed
from tools import seeds as runner


def test_the_seed_is_shifted_by_attnbook_seed(monkeypatch):
    monkeypatch.delenv("ATTNBOOK_SEED", raising=False)
    assert seed_offset() == 0 and seeded(3) == 3 and set_seed(3) == 3
    first = torch.rand(3)
    monkeypatch.setenv("ATTNBOOK_SEED", "2")
    assert seeded(3) == 3 + 2 * SEED_STRIDE and set_seed(3) == seeded(3)
    assert not torch.equal(torch.rand(3), first)
    monkeypatch.setenv("ATTNBOOK_SEED", "two")
    with pytest.raises(ValueError, match="ATTNBOOK_SEED must be an integer, got 'two'"):
        seeded(0)
    with pytest.raises(ValueError, match="seed must be an int"):
        set_seed(1.5)


def test_record_metric_writes_only_under_make_seeds(monkeypatch, tmp_path):
    monkeypatch.delenv("ATTNBOOK_METRICS", raising=False)
    assert record_metric("accuracy", 0.5) == 0.5
    path = tmp_path / "metrics.jsonl"
    monkeypatch.setenv("ATTNBOOK_METRICS", str(path))
    record_metric("accuracy", torch.tensor(0.75))
    assert json.loads(path.read_text()) == {"name": "accuracy", "value": 0.75}
    with pytest.raises(ValueError, match="non-empty string"):
        record_metric("", 1.0)


def test_summary_and_spread_read_from_the_table(tmp_path):
    assert summarize([1.0, 3.0]) == {"n": 2, "mean": 2.0, "std": 2 ** 0.5, "min": 1.0, "max": 3.0,
                                     "values": [1.0, 3.0]}
    table = tmp_path / "seeds.json"
    table.write_text(json.dumps({"runs": {"chapters/x.ipynb": {
        "0": {"metrics": {"acc": 0.9}, "failures": []}, "1": {"metrics": {"acc": 0.8}, "failures": []}}}}))
    assert seed_spread("chapters/x.ipynb", "acc", table)["mean"] == pytest.approx(0.85)
    with pytest.raises(KeyError, match="no run of chapters/x.ipynb recorded a metric named 'loss'"):
        seed_spread("chapters/x.ipynb", "loss", table)
    with pytest.raises(KeyError, match="has no runs of chapters/y.ipynb"):
        seed_spread("chapters/y.ipynb", "acc", table)


def test_a_run_records_metrics_and_every_failed_assertion(tmp_path):
    """A real kernel: seed 1 breaks the assertion, seed 0 does not; a cell tagged to fail is not counted."""
    (tmp_path / "chapters" / "results").mkdir(parents=True)
    (tmp_path / "chapters" / "results" / "earlier.json").write_text("{}")
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import os\nfrom attnbook.seeds import record_metric, seed_offset\n"
                                  "value = record_metric('offset', seed_offset())\n"
                                  "assert os.path.exists('results/earlier.json')"),
        nbformat.v4.new_code_cell("assert value == 0, f'offset {value}'"),
        nbformat.v4.new_code_cell("raise ValueError('meant')", metadata={"tags": ["raises-exception"]}),
    ])
    nbformat.write(notebook, tmp_path / "chapters" / "x.ipynb")
    good = runner.run_once("chapters/x.ipynb", 0, 1, root=tmp_path)
    bad = runner.run_once("chapters/x.ipynb", 1, 1, root=tmp_path)
    assert good["metrics"] == {"offset": 0.0} and good["failures"] == []
    assert bad["metrics"] == {"offset": 1.0}
    assert bad["failures"] == ["cell 1: AssertionError: offset 1.0"]
    table = {"date": "today", "machine": "here", "parallel_jobs": 1,
             "runs": {"chapters/x.ipynb": {"0": good, "1": bad}}}
    text = runner.markdown(table)
    assert "| offset | 0.5 |" in text and "- seed 1, cell 1: AssertionError: offset 1.0" in text


def test_a_partial_rerun_replaces_only_its_seeds_and_old_code_is_marked(tmp_path):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    (tmp_path / "chapters").mkdir()
    nbformat.write(notebook, tmp_path / "chapters" / "x.ipynb")
    old_code = runner.code_fingerprint(tmp_path / "chapters" / "x.ipynb")
    table_path = tmp_path / "seeds.json"
    table_path.write_text(json.dumps({"runs": {
        "chapters/x.ipynb": {str(s): {"seconds": 1.0, "metrics": {"acc": s / 10}, "failures": [],
                                      "code": old_code} for s in range(6)},
        "chapters/y.ipynb": {"0": {"seconds": 2.0, "metrics": {}, "failures": []}}}}))
    notebook.cells.append(nbformat.v4.new_code_cell("y = 2"))  # the code changes
    nbformat.write(notebook, tmp_path / "chapters" / "x.ipynb")
    new_code = runner.code_fingerprint(tmp_path / "chapters" / "x.ipynb")
    assert new_code != old_code
    rerun = [{"notebook": "chapters/x.ipynb", "seed": s, "seconds": 3.0, "metrics": {"acc": 0.99},
              "failures": [], "code": new_code, "date": "2026-11-29"} for s in (4, 1)]
    table = runner.merge(rerun, jobs=1, path=table_path)
    x = table["runs"]["chapters/x.ipynb"]
    assert list(x) == ["0", "1", "2", "3", "4", "5"], "every seed kept, in order"
    assert [x[s]["metrics"]["acc"] for s in x] == [0.0, 0.99, 0.2, 0.3, 0.99, 0.5]
    assert table["runs"]["chapters/y.ipynb"]["0"]["seconds"] == 2.0
    assert runner.stale_seeds("chapters/x.ipynb", x, tmp_path) == ["0", "2", "3", "5"]
    assert runner.stale_seeds("chapters/y.ipynb", table["runs"]["chapters/y.ipynb"], tmp_path) == []
    text = runner.markdown(table, root=tmp_path)
    assert "**Seeds 0, 2, 3, 5 ran an earlier version of this notebook's code; re-run them.**" in text

"""notebooks/quickstart.ipynb executed offline through nbclient, its outputs checked:
the task is shown, training ran, the loss went down, the plot was drawn, and
the scores it printed are what the checkpoint gives."""
import json
import os

import numpy as np
import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "quickstart.ipynb")


def _cell(nb, tag):
    return next(c for c in nb.cells if tag in c.get("metadata", {}).get("tags", []))


def _text(cell):
    return "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream"
                   and o.get("name") == "stdout")


def _line(cell, prefix):
    return next(line for line in _text(cell).splitlines() if line.startswith(prefix))


@pytest.mark.slow
def test_quickstart_notebook_runs_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert "pip" in nb.cells[1].source and _cell(nb, "install") is nb.cells[1]   # Colab-ready
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert not any(o.get("output_type") == "error" for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs)
    assert "task synth_parity" in _text(_cell(nb, "show"))
    assert "exit status 0" in _text(_cell(nb, "train"))
    assert "trained to step 60" in _text(_cell(nb, "train"))
    plot = _cell(nb, "plot")
    assert any("image/png" in o.get("data", {}) for o in plot.outputs)
    losses = json.loads(_line(plot, "losses:").split(":", 1)[1])
    assert losses["steps"] == [10, 20, 30, 40, 50, 60]
    assert losses["loss"][-1] < losses["loss"][0]

    # The scores the notebook printed are the checkpoint's.
    model_dir = _line(_cell(nb, "setup"), "model_dir:").split(":", 1)[1].strip()
    printed = json.loads(_line(_cell(nb, "generate"), "scores:").split(":", 1)[1])
    import t5mtl
    m = t5mtl.load(model_dir)
    np.testing.assert_allclose(m.score([printed["input"]] * 2, ["even", "odd"]),
                               [printed["even"], printed["odd"]], atol=1e-4)
    assert printed["even"] < 0 and printed["odd"] < 0

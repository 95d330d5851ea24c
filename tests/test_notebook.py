"""The quickstart notebook runs end to end (tiny scale), so it can never rot."""

import os

import pytest

from tests.conftest import REPO


def test_quickstart_notebook_executes(mnist_dir):
    nbformat = pytest.importorskip("nbformat", reason="the [test] extra installs nbformat")
    nbclient = pytest.importorskip("nbclient", reason="the [test] extra installs nbclient")
    nb = nbformat.read(REPO / "notebooks" / "quickstart.ipynb", as_version=4)
    env_backup = dict(os.environ)
    os.environ.update({"BRIDGING_TF_QUICK": "1", "BRIDGING_TF_MNIST": str(mnist_dir)})
    try:
        client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                         resources={"metadata": {"path": str(REPO / "notebooks")}})
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(env_backup)
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    assert "vanilla  target accuracy" in outputs
    assert "end      target accuracy" in outputs
    assert "private class accuracy" in outputs

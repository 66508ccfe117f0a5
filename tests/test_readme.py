"""The README's usage example runs as written, with the current API (no deprecated modules)."""
import re
import warnings
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no python example"
    namespace: dict = {}  # blocks build on each other, as a reader runs them in one session
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DeprecationWarning)
        for block in blocks:
            exec(compile(block, str(README), "exec"), namespace)
    assert not [w for w in caught if "captum_ext" in str(w.message)], [str(w.message) for w in caught]
    out = capsys.readouterr().out
    assert "pointing game:" in out and "CAM-box CorLoc:" in out and "learned-box CorLoc:" in out
    assert "mean error (px):" in out


def test_readme_points_to_the_current_modules():
    text = README.read_text()
    assert "captum_ext.models.ellipse_regression" not in text and "roi_training" not in text
    assert "design.md" not in text and "seed 00" not in text

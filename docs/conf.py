"""Sphinx configuration of the captum_ext documentation.

Build (warnings are errors)::

    sphinx-build -W --keep-going -b html docs docs/_build/html

Everything is generated offline: no intersphinx, figures are drawn at build time from the benchmark generators,
and the tutorials in ``tutorials/`` are executed by sphinx-gallery. ``CAPTUM_EXT_DOCS_RUN_TUTORIALS=0`` skips
running them (their pages then show the code without output): a quick build for layout and API changes.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

# Headless, deterministic figures: pick the non-interactive backend before anything imports pyplot.
os.environ.setdefault("MPLBACKEND", "Agg")
import matplotlib  # noqa: E402

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the checkout's package, also when it is not installed

import captum_ext  # noqa: E402

# -- Project information -------------------------------------------------------------------------------------------
project = "captum_ext"
author = "captum_ext contributors"
copyright = "2025, captum_ext contributors"
release = captum_ext.__version__
version = ".".join(release.split(".")[:2])

# -- General configuration -----------------------------------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",
    "matplotlib.sphinxext.plot_directive",
    "myst_parser",  # renders the Markdown benchmark report (benchmarks/results/REPORT.md)
]

templates_path: list = []
exclude_patterns = ["_build", "_generated", "Thumbs.db", ".DS_Store", "auto_tutorials/*.ipynb", "auto_tutorials/*.py",
                    "auto_tutorials/*.zip"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
myst_enable_extensions = ["colon_fence"]
root_doc = "index"
language = "en"

# -- autodoc / napoleon --------------------------------------------------------------------------------------------
autodoc_default_options = {
    "members": True,
    "member-order": "bysource",
    "show-inheritance": True,
}
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_class_signature = "mixed"
# The EfficientNet-Lite0 packages are imported lazily inside functions, so the docs need no mock for them.
autodoc_mock_imports: list = []

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_include_init_with_doc = False
napoleon_use_rtype = False



def _is_prose(text: str) -> bool:
    """True if ``text`` has a space outside brackets: a phrase, not a type such as ``Tuple[int, int]``."""
    depth = 0
    for char in text:
        depth += char in "([{"
        depth -= char in ")]}"
        if char == " " and depth == 0:
            return True
    return False


def _restore_prose_colons(app, what, name, obj, options, lines):
    """Undo napoleon's "type: description" split of a ``#:`` comment whose first line is a sentence with a colon.

    Napoleon reads ``#: Bin edges for 64×64 scenes: doubling bins ...`` as type "Bin edges for 64×64 scenes";
    the package's data comments are prose (types come from annotations), so put the sentence back together.
    """
    if what not in ("data", "attribute") or not lines or not lines[-1].startswith(":type: "):
        return
    head = lines[-1][len(":type: "):]
    if not _is_prose(head):
        return
    lines.pop()  # the ":type:" line
    if lines and not lines[-1].strip():
        lines.pop()  # and the blank line before it
    if lines:
        lines[0] = f"{head}: {lines[0]}"
    else:
        lines.append(head)


def setup(app):
    # Priority above napoleon's default (500): run after it has rewritten the docstring.
    app.connect("autodoc-process-docstring", _restore_prose_colons, priority=600)


# -- matplotlib plot directive (figures generated at build time) ---------------------------------------------------
plot_include_source = True
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 90)]
plot_rcparams = {"figure.max_open_warning": 0}
plot_pre_code = "import numpy as np\nimport matplotlib.pyplot as plt\n"

# -- sphinx-gallery (executable tutorials) -------------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "../tutorials",
    "gallery_dirs": "auto_tutorials",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "reset_modules": ("matplotlib",),
    "show_memory": False,
    # Running the tutorials takes most of the build; skipping them is for quick layout checks only.
    "plot_gallery": "False" if os.environ.get("CAPTUM_EXT_DOCS_RUN_TUTORIALS", "1") == "0" else "True",
}

# -- HTML ----------------------------------------------------------------------------------------------------------
# Furo: maintained, responsive, light/dark; it scrolls wide tables and code horizontally instead of clipping them.
html_theme = "furo"
html_title = f"captum_ext {release}"
html_static_path = ["_static"]
# Fixes for wide content Furo leaves alone: long table cells (the benchmark report), generated tables and
# sphinx-gallery output; see the comments in the file.
html_css_files = ["custom.css"]
html_theme_options = {"navigation_with_keys": True}


def _write_zoo_table() -> None:
    """Render the zoo's shipped training records (held-out metrics) as an RST table included by the docs."""
    import json

    from captum_ext import zoo

    rows = []
    for name in zoo.available(zoo.SCENE_CLASSIFIER):  # the table's columns are the scene classifiers' record
        path = zoo.WEIGHTS_DIR / f"{name}.json"
        if not path.exists():
            rows.append(f"   * - ``{name}``\n     - (not trained)\n     - \n     - ")
            continue
        record = json.loads(path.read_text())
        held = record["held_out"]
        if "accuracy" in held:
            score = f"accuracy {held['accuracy']:.3f}"
        else:
            score = f"mAP {held['mAP']:.3f}, exact label set {held['exact_set_accuracy']:.3f}"
        train = record["training"]
        rows.append(
            f"   * - ``{name}``\n     - {score} (n = {held['n']})\n"
            f"     - {train['digit_crop_pretraining_steps']} crop steps + {train['epochs']} × "
            f"{train['scenes_per_epoch']:,} scenes\n     - {train['seconds'] / 60:.1f} min"
        )
    header = (
        ".. list-table::\n   :header-rows: 1\n   :widths: 28 34 26 12\n\n"
        "   * - model\n     - held-out (test-split digits, unseen seed)\n     - training data\n"
        "     - CPU time (2 cores)\n"
    )
    out = Path(__file__).parent / "_generated"
    out.mkdir(exist_ok=True)
    (out / "zoo_table.rst").write_text(header + "\n".join(rows) + "\n")


_write_zoo_table()

"""Sphinx configuration: MyST Markdown, the pydata theme (as JupyterHub's projects use), and
reference pages generated from the code (`_ext/settings_pages.py`)."""

import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "_ext"))

from repo2docker_buildcore import __version__  # noqa: E402

project = "Repo2DockerSpawner"
author = "Repo2DockerSpawner contributors"
copyright = "2026, " + author
version = release = __version__

extensions = ["myst_parser", "settings_pages"]
source_suffix = {".md": "markdown"}
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3  # the pages link to each other's sections by their titles' slugs
exclude_patterns = ["_build"]

html_theme = "pydata_sphinx_theme"
html_title = "Repo2DockerSpawner"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
html_static_path: list[str] = []

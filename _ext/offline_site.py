"""Make the site work offline: it serves its own scripts and loads nothing from elsewhere.

- MathJax 3 comes from the `django-static-mathjax` wheel pinned in requirements.lock
  (it only ships MathJax's files); its `es5` build is copied into the site's
  `_static/mathjax/` and Sphinx is pointed at it.
- Jupyter Book always loads sphinx-thebe, whose scripts point at a CDN and are
  added twice to every page (a console error). The book does not use Thebe (its
  launch buttons open Colab), so its scripts are removed from every page.
"""

import shutil
from pathlib import Path


def _mathjax_es5() -> Path:
    import mathjax  # the package django-static-mathjax installs

    folder = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    if not (folder / "tex-chtml.js").exists():
        raise RuntimeError(f"MathJax files not found in {folder}; run `make book` to install them")
    return folder


def _add_static_path(app, config):
    # html_static_path copies a folder's *contents*, so stage a folder holding `mathjax/`.
    staging = Path(app.outdir).parent / "mathjax_static"
    target = staging / "mathjax"
    if not (target / "tex-chtml.js").exists():
        es5 = _mathjax_es5()
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        shutil.copy2(es5 / "tex-chtml.js", target)
        for folder in ["a11y", "ui", "input", "output", "adaptors", "sre"]:
            shutil.copytree(es5 / folder, target / folder)
    config.html_static_path.append(str(staging))
    config.mathjax_path = "mathjax/tex-chtml.js"


def _drop_thebe_scripts(app, pagename, templatename, context, doctree):
    def is_thebe(script) -> bool:
        body = script.attributes.get("body", "") if hasattr(script, "attributes") else ""
        return "thebe" in str(script).lower() or "THEBE" in body
    if "script_files" in context:
        context["script_files"] = [s for s in context["script_files"] if not is_thebe(s)]


def setup(app):
    app.connect("config-inited", _add_static_path, priority=900)
    app.connect("html-page-context", _drop_thebe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

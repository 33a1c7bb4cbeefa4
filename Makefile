# The book's two commands (see README.md):
#   make book   set up .venv and build the site into _build/html
#   make test   run every test: lint, unit tests, notebooks, site build, browser
# and, for maintainers, `make test-latest` (the newest releases of every dependency).
# and, for students, `make lab` to open JupyterLab.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# The lock is made for Python 3.11 to 3.15 (numpy 2.4 and others need 3.11 or newer).
PYTHON_MINOR := $(if $(PYTHON),$(shell $(PYTHON) -c 'import sys; print(sys.version_info.minor)' 2>/dev/null))
# The CPU build of PyTorch. GPU users: see README.md ("A GPU").
# Python 3.15 needs PyTorch 2.15.0, the first release with wheels for it.
TORCH_SPEC ?= torch==2.13.0+cpu
TORCH_SPEC_PY315 ?= torch==2.15.0+cpu
TORCH := $(if $(filter 15,$(PYTHON_MINOR)),$(TORCH_SPEC_PY315),$(TORCH_SPEC))
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
STAMP := $(VENV)/.installed

.PHONY: book student-book test test-latest lab pdf release-tag binder lint unit notebooks site browser exercises seeds lock clean browser-deps grade

book: $(STAMP)
	$(BIN)/jupyter-book build . --warningiserror --keep-going --path-output . -q
	@echo ""
	@echo "The book is built. Open this page in a browser:"
	@echo "    file://$(CURDIR)/_build/html/index.html"

$(STAMP): requirements.lock pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 is needed: neither python3.11 nor python3 was found (set PYTHON=...)"; exit 1; }
	@case "$(PYTHON_MINOR)" in 11|12|13|14|15) ;; \
	  *) echo "$(PYTHON) is not Python 3.11 to 3.15, which the lock is made for (set PYTHON=...)"; exit 1;; esac
	@if [ -x $(BIN)/python ] && [ "$$($(BIN)/python -c 'import sys; print(sys.version_info.minor)')" != "$(PYTHON_MINOR)" ]; then \
	  echo "$(VENV) was made with another Python than $(PYTHON); remove it (rm -rf $(VENV)) to rebuild it"; exit 1; fi
	$(PYTHON) -m venv $(VENV)
	# Try the configured package sources first, then PyTorch's own CPU index.
	$(BIN)/pip install --quiet "$(TORCH)" \
	  || $(BIN)/pip install --quiet "$(TORCH)" --index-url $(TORCH_CPU_INDEX)
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (attnbook)" >/dev/null
	touch $(STAMP)

test: $(STAMP) browser-deps
	$(BIN)/python -m tools.run_tests

# The book with the newest releases of its dependencies (requirements.in; the lock ignored),
# in a fresh clone of HEAD and a fresh environment under _build/test-latest, on the newest
# python3.N on PATH (or PYTHON_LATEST); prints what breaks. Not part of `make test`.
PYTHON_LATEST ?=
test-latest: browser-deps
	@test -n "$(PYTHON)" || { echo "set PYTHON=... to a Python 3 that runs tools/test_latest.py"; exit 1; }
	$(PYTHON) -m tools.test_latest $(if $(PYTHON_LATEST),--python $(PYTHON_LATEST))

lint: $(STAMP)
	$(BIN)/ruff check src tests tools _ext

unit: $(STAMP)
	$(BIN)/pytest tests -m "not notebooks and not site" -q

# The site without solutions, for a course whose students should not see them.
student-book: $(STAMP)
	$(BIN)/python -m tools.student_toc _build/_toc_student.yml
	$(BIN)/jupyter-book build . --toc _build/_toc_student.yml --path-output _build_student \
	  --warningiserror --keep-going -q
	@echo "Student site (no solutions, no instructor's guide): file://$(CURDIR)/_build_student/_build/html/index.html"

# Jupyter refuses to start as root unless told; containers often run as root.
LAB_ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
LAB_ARGS ?=
lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=. $(LAB_ROOT_FLAG) $(LAB_ARGS)

# The whole book as one PDF (_build/attnbook.pdf), printed offline by headless Chromium.
pdf: book browser-deps
	$(BIN)/python -m tools.make_pdf --out _build/attnbook.pdf

# Tag this commit as the release that every notebook's install cell installs (v<version>).
release-tag: $(STAMP)
	$(BIN)/python -m tools.launch_cell --check
	$(BIN)/python -m tools.binder_env --check
	git tag -a "$$($(BIN)/python -m tools.launch_cell --tag)" -m "attnbook $$($(BIN)/python -m tools.launch_cell --tag)"
	@echo "Push it: git push origin $$($(BIN)/python -m tools.launch_cell --tag)"

# Regenerate binder/ from requirements.lock and TORCH_SPEC (after `make lock`).
binder: $(STAMP)
	$(BIN)/python -m tools.binder_env

# Regenerate exercises/ from solutions/ (and execute them so outputs are stored).
exercises: $(STAMP)
	$(BIN)/python -m tools.make_exercises --execute

# Autograde submitted notebooks (files or folders) against solutions/ with nbgrader's steps:
# make grade NB="submissions/alice/04_queries_keys_values.ipynb submissions/bob"
# GRADE_ARGS="--junit _build/grades.xml --cell-timeout 120 --timeout 900" adds options.
GRADE_ARGS ?=
grade: $(STAMP)
	@test -n "$(NB)" || { echo 'Say what to grade: make grade NB="path/to/notebook.ipynb"'; exit 2; }
	$(BIN)/python -m tools.grade $(NB) $(GRADE_ARGS)

# Debian's Chromium drives the browser tests; as root we install it, otherwise we ask.
browser-deps:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing Debian's chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "The browser tests need Chromium at /usr/bin/chromium."; \
	    echo "Install it with:  sudo apt-get install chromium   (or set CHROMIUM=/path/to/chrome)"; \
	    [ -n "$$CHROMIUM" ] || exit 1; \
	  fi; \
	fi

# Re-run every notebook that trains under seeds 0-5 and write chapters/results/seeds.{json,md}.
# NB="chapters/03_multiplicative_attention.ipynb" SEEDS="0 1 2" narrows it.
SEEDS ?= 0 1 2 3 4 5
seeds: $(STAMP)
	$(BIN)/python -m tools.seeds $(NB) --seeds $(SEEDS)

lock:
	$(BIN)/pip freeze --exclude-editable | grep -v '^torch==' > requirements.lock.new
	@echo "Wrote requirements.lock.new; add the header from requirements.lock and replace it."

clean:
	rm -rf _build _build_student .pytest_cache

# minidiff course. The two commands a newcomer needs:
#   make book   set up .venv if needed, execute the chapters, build the website into _build/html
#   make test   set up .venv if needed, run every chapter under nbval (ci profile), the unit tests, a book build from those executed chapters
# Others: make setup | student | lab | sync | clean.  Options: PROFILE=ci|cpu|gpu (book, lab), PYTHON=python3.11
#   make gpu-check  on one CUDA GPU, offline, <= 8 min: kernels, speed, training, every chapter (benchmarks/results/gpu_check.json)

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PROFILE ?= $(if $(MINIDIFF_PROFILE),$(MINIDIFF_PROFILE),cpu)
PYTEST_ARGS ?=

.PHONY: setup book test student lab sync clean help gpu-check

help:
	@sed -n '2,6p' Makefile

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; v = sys.version_info; sys.exit(0 if v >= (3, 10) else "minidiff needs Python >= 3.10, found %d.%d (set PYTHON=python3.11)" % v[:2])'
	@echo ">> creating $(VENV) and installing minidiff with its book and test extras (a few minutes the first time)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --disable-pip-version-check -e ".[book,test]" > $(VENV)/pip-install.log 2>&1 \
		|| { tail -n 40 $(VENV)/pip-install.log; echo "!! installation failed; full log: $(VENV)/pip-install.log"; exit 1; }
	@$(PY) scripts/check_install.py
	@$(PY) -c 'import torch, minidiff; print(">> ready: minidiff", minidiff.__version__, "| CUDA", torch.cuda.is_available())'
	@touch $(STAMP)

# The website. Each build starts with an empty artifact cache (_build/artifacts) so pages show what the code does. Executed notebooks are cached; switching PROFILE clears the cache so outputs match the profile.
book: setup
	@mkdir -p _build
	@if [ "$$(cat _build/.profile 2>/dev/null)" != "$(PROFILE)" ]; then rm -rf _build/.jupyter_cache; echo "$(PROFILE)" > _build/.profile; fi
	@# the execution cache keys on a notebook's cells only: when the package's code changes, every page is executed
	@# again, so no page shows results of older code (scripts/package_hash.py: a hash of minidiff/'s source files)
	@h=$$($(PY) scripts/package_hash.py); if [ "$$(cat _build/.package-hash 2>/dev/null)" != "$$h" ]; then \
		rm -rf _build/.jupyter_cache; echo "$$h" > _build/.package-hash; echo ">> minidiff changed since the last build: every chapter runs again"; fi
	@echo ">> building the book with profile '$(PROFILE)' (make book PROFILE=ci for a quick build)"
	@# one artifact cache per build (minidiff.cache): chapters executed in this build share what they trained (chapter
	@# 02's encoder in chapter 11, chapter 10's autoencoder in 09 and 11); it starts empty, so no page shows the results
	@# of older code
	rm -rf _build/artifacts
	MINIDIFF_PROFILE=$(PROFILE) MINIDIFF_STATIC=1 MINIDIFF_CHECKPOINT_DIR=$(CURDIR)/_build/artifacts \
		$(VENV)/bin/jupyter-book build . --keep-going
	@test -f _build/html/index.html && echo ">> open _build/html/index.html"

test: setup
	MINIDIFF_PROFILE=ci MINIDIFF_STATIC=1 $(PY) -m pytest tests chapters --nbval-lax --nbval-current-env --durations=15 $(PYTEST_ARGS)

# The GPU check (scripts/gpu_check.py): Triton kernels compiled vs the reference, their speed, U-Net and DiT training
# killed and resumed, every chapter in the gpu profile under MINIDIFF_SMOKE=1; one JSON and one table. It runs offline,
# so it uses the existing .venv as it is and never starts an installation (make setup needs the network).
gpu-check:
	@test -x $(PY) || { echo "!! $(PY) is missing: run make setup first (with network access)"; exit 1; }
	$(PY) scripts/gpu_check.py $(GPU_CHECK_ARGS)

# The student edition: every chapter with each exercise's solution replaced by a stub to fill in, its check kept
# (scripts/student_edition.py; generated, never committed). The website links it on each chapter page.
student: setup
	$(PY) scripts/student_edition.py --out _build/student

lab: setup
	MINIDIFF_PROFILE=$(PROFILE) $(VENV)/bin/jupyter lab chapters

# Rewrite the standard setup cell of every chapter from _config.yml and strip outputs.
sync: setup
	$(PY) scripts/sync_setup_cells.py

clean:
	rm -rf _build .pytest_cache runs
	find . -name __pycache__ -type d -prune -not -path './.venv/*' -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)

# `make book`: set up and build the book (executing the chapters on the offline model; again only
#   those whose code changed, see CACHE_KEY).
# `make test`: set up and run all checks: ruff, the unit tests, then every chapter with nbmake, beside
#   one shared vLLM server.
# `make unit`: ruff and the unit tests alone (no chapters, no minutes-long tests).
# `make serve`: a real vLLM server on the offline model (BBT through it: --service URL).
PYTHON ?= python3.11
VENV ?= .venv
BIN = $(VENV)/bin

$(VENV)/.installed: requirements.txt requirements-nodeps.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -r requirements-nodeps.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

setup: $(VENV)/.installed

# The execution cache (_config.yml: execute_notebooks: cache) re-runs only the chapters whose code cells
# changed; it cannot see the package's code or BBT_PROFILE, so a change to either empties it first (the
# code's hash leaves out docstrings and comments: an edit to them keeps the cache).
CACHE_KEY = $${BBT_PROFILE:-default} $$($(BIN)/python -m bbt_mini.core.source)

book: setup
	@key="$(CACHE_KEY)"; if [ "$$(cat _build/.jupyter_cache.key 2>/dev/null)" != "$$key" ]; then \
	  rm -rf _build/.jupyter_cache && mkdir -p _build && echo "$$key" > _build/.jupyter_cache.key; fi
	$(BIN)/python tools/record.py cache  # fresh GPU recordings are shown as recorded, not executed
	$(BIN)/jupyter-book build book/

lint: setup
	$(BIN)/ruff check bbt_mini tests tools

unit: lint
	$(BIN)/pytest tests -m "not effect and not rehearsal and not vllm and not ray"

# `make test`: the server's environment, then everything beside ONE vLLM server (tools/shared_server.py: the
# real-server tests and chapter 1 use it; the kill-and-resume test kills it and it is started again);
# chapters in the ci profile unless BBT_PROFILE says otherwise.
test: lint
	$(BIN)/python -m bbt_mini serve --build-only
	BBT_PROFILE=$${BBT_PROFILE:-ci} $(BIN)/python tools/shared_server.py -- \
	  $(BIN)/pytest --nbmake --nbmake-timeout=900 tests book

serve: setup  # a real LMaaS: vLLM on the offline model, port 8011 (builds its own venv once)
	$(BIN)/python -m bbt_mini serve

sync:  # each chapter's .ipynb from its .md (cell ids kept); which GPU recordings are stale
	$(BIN)/jupytext --quiet --update --to ipynb book/chapters/*.md book/appendix/*.md
	$(BIN)/python tools/record.py status

clean:
	rm -rf _build book/_build

.PHONY: setup book lint unit test serve sync clean

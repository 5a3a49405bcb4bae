# Every target sets itself up on a fresh machine: a .venv, the CPU build of torch where no GPU is
# present (the CUDA build where one is), then the package itself.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
STAMP := $(VENV)/.zoo-installed
# No display needed: MuJoCo only simulates here.
export MUJOCO_GL ?= egl

.PHONY: install quickstart test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@if nvidia-smi -L >/dev/null 2>&1; then \
		echo "GPU found: installing the CUDA build of torch"; $(PIP) install -q "torch>=2.4,<3"; \
	else \
		echo "no GPU: installing the CPU build of torch $(TORCH_VERSION)"; \
		: "a local wheel with local deps, a local +cpu wheel with deps from the index, the CPU index, PyPI"; \
		$(PIP) install -q --no-index "torch==$(TORCH_VERSION)" 2>/dev/null \
		|| $(PIP) install -q "torch==$(TORCH_VERSION)+cpu" 2>/dev/null \
		|| $(PIP) install -q "torch==$(TORCH_VERSION)" --index-url $(TORCH_CPU_INDEX) \
		|| $(PIP) install -q "torch==$(TORCH_VERSION)"; \
	fi
	$(PIP) install -q -e ".[test]"
	touch $(STAMP)

quickstart: $(STAMP)
	$(VENV)/bin/zoo quickstart

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PIP) install -q -e ".[bench]"
	$(PY) benchmarks/throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache

# vpool: every target bootstraps what it needs (a local .venv), nothing is installed by hand.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test lint proto vectors clean help

help:
	@echo "make test     - create .venv if needed, install vpool with test extras, run the tests"
	@echo "make lint     - ruff + mypy"
	@echo "make proto    - regenerate gRPC code from proto/"
	@echo "make vectors  - regenerate the golden withdrawal vectors (review the diff!)"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev]'
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Generated code lands in vpool/v1/ (committed, never edited by hand; tests/test_proto_generated.py
# fails when it is stale). Old outputs are removed first so a deleted .proto leaves nothing behind.
PROTOS := $(sort $(wildcard proto/vpool/v1/*.proto))

proto: $(STAMP)
	rm -f vpool/v1/*_pb2.py vpool/v1/*_pb2.pyi vpool/v1/*_pb2_grpc.py
	$(PY) -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)

vectors: $(STAMP)
	$(PY) scripts/gen_vectors.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

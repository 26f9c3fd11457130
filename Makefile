# vpool: every target bootstraps what it needs (a local .venv), nothing is installed by hand.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
RUNTIME := $(VENV)/.runtime

.PHONY: test demo bench reliability lint proto vectors clean help

help:
	@echo "make test     - create .venv if needed, install vpool with test extras, run the tests"
	@echo "make demo     - a real regtest pool end to end (bcoin, 3 signers, coordinator)"
	@echo "make bench    - benchmarks: bench/results.json and .md (QUICK=1: within 2 minutes)"
	@echo "make reliability - crash points, signer faults, fuzzing, transport, load: docs/reliability.md"
	@echo "make lint     - ruff + mypy"
	@echo "make proto    - regenerate gRPC code from proto/"
	@echo "make vectors  - regenerate the golden withdrawal and refund vectors (review the diff!)"

# HWI's device scan needs the system libusb; install it where we can (CI and dev machines run as
# root with apt). Elsewhere, the tests that scan USB skip and say why.
.PHONY: system-deps
system-deps:
	@ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so' || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing libusb-1.0-0 (needed by HWI's USB scan)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0) >/dev/null; \
	  else echo "note: libusb-1.0 missing; install libusb-1.0-0 for HWI USB scans"; fi; }

# The status page's tests drive Debian's chromium headless (Playwright, with the system browser:
# nothing is downloaded). Installed where we can (root with apt); elsewhere those tests skip.
.PHONY: browser-deps
browser-deps:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium (the status page's browser tests)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null; \
	  else echo "note: chromium missing; install Debian's chromium for the status page tests"; fi; }

# Two stamps: the demo needs only vpool and what it runs on ($(RUNTIME)); the tests, lint and
# benchmarks also need the test and dev extras ($(STAMP)). PYTHONWARNINGS silences setuptools'
# notice about editable installs (the only deprecation it had, the license table, is fixed).
$(RUNTIME): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	PYTHONWARNINGS=ignore $(PY) -m pip install --quiet -e .
	@touch $(RUNTIME)

$(STAMP): $(RUNTIME)
	PYTHONWARNINGS=ignore $(PY) -m pip install --quiet -e '.[test,dev]'
	@touch $(STAMP)

# The regtest node of the tests and the demo: bcoin, run with its JavaScript backends. No install
# script runs, so nothing is compiled (bcoin's optional native modules would need a compiler).
node_modules: package-lock.json
	@command -v npm >/dev/null || { echo "note: npm missing; the regtest tests will skip"; exit 0; }; \
	  npm ci --ignore-scripts --no-audit --no-fund && touch node_modules

test: $(STAMP) system-deps browser-deps node_modules
	$(PY) -m pytest -q

# A real regtest pool end to end: bcoin, three signers (one behind the Jade-protocol emulator),
# the coordinator on SQLite, two clients; prints each step and a summary, exits 0.
# The Python packages and bcoin install side by side (-j2): on a fresh clone that is most of the
# wait.
demo:
	@$(MAKE) -s --no-print-directory -j2 $(RUNTIME) node_modules
	@$(MAKE) -s --no-print-directory system-deps
	$(PY) -m vpool.devnet.demo

# Benchmarks: every figure measured in the run, peers side by side (bench/run.py); writes
# bench/results.json and bench/results.md. QUICK=1: smaller sizes, within 2 minutes.
bench: $(STAMP)
	$(PY) -m bench.run $(if $(QUICK),--quick)
	$(PY) scripts/rebuild_cost.py --check --repeat 7 --only funded --only short --only fees $(if $(QUICK),750 1500,1500 3000)

# The reliability suite in full (make test runs its fast subset): each part of tests/reliability/
# writes build/reliability/<part>.json; the report assembles docs/reliability.md and the README's
# table. About 30 minutes on the 2-core machine. The report is written even when a part fails.
reliability: $(STAMP) system-deps node_modules
	rm -rf build/reliability
	@start=$$(date +%s); \
	  VPOOL_RELIABILITY=full $(PY) -m pytest -q -p no:cacheprovider tests/reliability; status=$$?; \
	  $(PY) scripts/reliability_report.py --seconds $$(( $$(date +%s) - start )); exit $$status

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
	$(PY) scripts/gen_refund_vectors.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

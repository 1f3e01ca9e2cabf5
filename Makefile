# drillbook — `make demo` and `make test` set up everything they need on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DRILLBOOK := $(VENV)/bin/drillbook
STAMP := $(VENV)/.installed
# Debian packages the lab and the browser test use; installed when missing and running as root.
# (postgresql: the lab needs TLS, which the pgserver wheel's binaries are built without;
# nftables and stress-ng: the fault library's network partitions and resource pressure.)
APT_PACKAGES := postgresql openssh-server chromium nftables stress-ng

.PHONY: demo test venv system-deps lint bench clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	@# rfc3987-syntax (an optional extra of jsonschema) costs 1.2 s on every import of nbformat;
	@# nothing here validates IRIs, so drop it (jsonschema skips the format when it is absent).
	$(PY) -m pip uninstall -q -y rfc3987-syntax || true
	@touch $(STAMP)

system-deps:
	@missing=""; \
	for pkg in $(APT_PACKAGES); do dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "note: missing Debian packages:$$missing (install them as root for the lab (PostgreSQL with TLS, the SSH host) and the browser test)"; \
	  fi; \
	fi

test: $(STAMP) system-deps
	$(PY) -m pytest -q

lint: $(STAMP)
	$(DRILLBOOK) lint

demo: $(STAMP) system-deps
	$(DRILLBOOK) lab up
	$(DRILLBOOK) lint
	$(DRILLBOOK) run smoke --env local
	$(DRILLBOOK) run failover --env local --approve fault --approve promote
	$(DRILLBOOK) run backup-restore --env local
	$(DRILLBOOK) run key-rotation --env local --approve rotate
	$(DRILLBOOK) run partition-standby --env local --approve fault
	$(DRILLBOOK) run disk-full --env local --approve fault --approve free
	$(DRILLBOOK) run partition-primary --env local --approve fault --approve promote
	$(DRILLBOOK) verify
	$(DRILLBOOK) status
	$(DRILLBOOK) publish

bench: $(STAMP) system-deps
	$(PY) bench/run_overhead.py
	$(PY) bench/archive_scale.py
	$(PY) bench/site_build.py
	$(PY) bench/drills.py

clean:
	rm -rf $(VENV) .drillbook site

# drillbook — `make demo` and `make test` set up everything they need on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DRILLBOOK := $(VENV)/bin/drillbook
STAMP := $(VENV)/.installed
# Airflow 3 lives in a virtual environment of its own (its pins would fight JupyterLab's); uv, pinned
# in requirements.txt, fills it from the fully pinned requirements-airflow.txt in seconds.
AIRFLOW_VENV := .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed
# Debian packages the lab and the browser test use; installed when missing and running as root.
# (postgresql: the lab needs TLS, which the pgserver wheel's binaries are built without;
# nftables and stress-ng: the fault library's network partitions and resource pressure.)
APT_PACKAGES := postgresql openssh-server chromium pgbouncer redis-server nftables stress-ng

.PHONY: demo test venv airflow-venv system-deps lint bench clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml jupyter-config/drillbook.json
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	@# rfc3987-syntax (an optional extra of jsonschema) costs 1.2 s on every import of nbformat;
	@# nothing here validates IRIs, so drop it (jsonschema skips the format when it is absent).
	$(PY) -m pip uninstall -q -y rfc3987-syntax || true
	@# An editable install skips pyproject's data-files: enable the Jupyter extension (pre-save hook) here.
	install -D -m 644 jupyter-config/drillbook.json $(VENV)/etc/jupyter/jupyter_server_config.d/drillbook.json
	@touch $(STAMP)

airflow-venv: $(AIRFLOW_STAMP)

$(AIRFLOW_STAMP): requirements-airflow.txt $(STAMP)
	$(VENV)/bin/uv venv -q --allow-existing --python "$$($(PY) -c 'import sys; print(sys._base_executable)')" $(AIRFLOW_VENV)
	$(VENV)/bin/uv pip install -q --python $(AIRFLOW_VENV)/bin/python -r requirements-airflow.txt
	@touch $(AIRFLOW_STAMP)

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

test: $(STAMP) $(AIRFLOW_STAMP) system-deps
	$(PY) -m pytest -q

lint: $(STAMP)
	$(DRILLBOOK) lint

demo: $(STAMP) system-deps
	$(DRILLBOOK) lab up
	$(DRILLBOOK) lint
	$(DRILLBOOK) keys trust
	$(DRILLBOOK) run smoke --env local
	$(DRILLBOOK) run failover --env local --approve fault --approve promote
	$(DRILLBOOK) run backup-restore --env local
	$(DRILLBOOK) run key-rotation --env local --approve rotate
	$(DRILLBOOK) run pool-exhausted --env local --approve fault --approve terminate
	$(DRILLBOOK) run cache-down --env local --approve fault --approve restart
	$(DRILLBOOK) run slow-query --env local --approve fault --approve cancel
	$(DRILLBOOK) run cert-expiry --env local --approve fault --approve rotate
	$(DRILLBOOK) run pitr-restore --env local --approve fault
	$(DRILLBOOK) run cold-start --env local --approve fault --approve start
	$(DRILLBOOK) run partition-standby --env local --approve fault
	$(DRILLBOOK) run disk-full --env local --approve fault --approve free
	$(DRILLBOOK) run partition-primary --env local --approve fault --approve promote
	$(DRILLBOOK) verify
	$(DRILLBOOK) status
	$(DRILLBOOK) anchor
	$(DRILLBOOK) publish
	$(DRILLBOOK) verify --anchors --against site

bench: $(STAMP) system-deps
	$(PY) bench/run_overhead.py
	$(PY) bench/archive_scale.py
	$(PY) bench/site_build.py
	$(PY) bench/drills.py
	$(PY) bench/s3_archive.py

clean:
	rm -rf $(VENV) $(AIRFLOW_VENV) .drillbook site

# make run: set up .venv and open the app.  make test: set up .venv and run the whole suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PORT ?= 8501

.PHONY: setup run test unit lab bench clean reference

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(PY) -m streamlit run app/Home.py --server.address localhost --server.port $(PORT) --server.headless true \
		--browser.gatherUsageStats false

test: setup
	$(PY) -m pytest

unit: setup
	$(PY) -m pytest -m "not slow"

lab: setup
	$(PY) -m jupyter lab notebooks/ --ip localhost $(if $(filter 0,$(shell id -u)),--allow-root)

bench: setup
	$(PY) bench/overhead.py
	$(PY) bench/teacher_cache.py
	$(PY) bench/store.py
	$(PY) bench/live.py

clean:
	rm -rf $(VENV) .pytest_cache

reference: setup
	$(PY) -c "import re, pathlib; from kdlib.reference import config_reference as r; p = pathlib.Path('README.md'); \
	p.write_text(re.sub(r'(<!-- config-reference:start -->\n).*?(<!-- config-reference:end -->)', \
	lambda m: m.group(1) + r() + m.group(2), p.read_text(), flags=re.S))"

# Set-up and everyday commands. `make demo` and `make test` create .venv and install on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APP_PORT ?= 8501

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: install
	$(PY) -m emca_vis.demo --train --sample runs/demo/sample.png
	$(PY) -m emca_vis.gradcam --image runs/demo/sample.png --out runs/demo/gradcam.png
	@echo "Serving the app at http://localhost:$(APP_PORT) (Ctrl-C stops it)"
	$(PY) -m streamlit run app/main.py --server.headless true --server.port $(APP_PORT)

test: install
	$(PY) -m pytest -q --durations=15

bench: install
	$(PY) -m emca_vis.profile --models resnet50 resnet50_se resnet50_eca resnet50_srm resnet50_emca_se resnet50_emca_eca resnet50_emca_srm --batch-sizes 16 --repeats 7
	$(PY) -m emca_vis.profile --train --models resnet18 resnet18_eca resnet18_emca_eca --batch-sizes 16 --repeats 7
	$(PY) benchmarks/gradcam_speed.py --model resnet50 --batch-size 16 --image-size 224
	$(PY) benchmarks/corruption_speed.py --image-size 224 --batch-size 16
	$(PY) benchmarks/scale.py

clean:
	rm -rf $(VENV) .pytest_cache

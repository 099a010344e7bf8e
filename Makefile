# The two commands of the README: `make dev` (run it) and `make test` (test it). Everything else is optional.
SHELL := /bin/bash
VENV := .venv
TOOLS := $(VENV)/.installed

.PHONY: dev test test-persistence check token secret mail reset sam-build bench fuzz clean

# schemathesis lives in its own virtualenv (its dependencies are not moto's).
SCHEMATHESIS := .venv-schemathesis/.installed
$(SCHEMATHESIS): infra/schemathesis/requirements.txt
	python3 -m venv .venv-schemathesis
	.venv-schemathesis/bin/pip install --quiet --upgrade pip
	.venv-schemathesis/bin/pip install --quiet -r infra/schemathesis/requirements.txt
	touch $@

$(TOOLS): requirements-dev.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $@

# `make dev PARAMS="CleverApiUrl=https://api.clever.com CleverOauthUrl=..."` overrides template parameters.
export PARAMS

## Run it: local AWS stack (DynamoDB Local + moto, persistent) + dev gateway on http://127.0.0.1:3000
dev: $(TOOLS)
	infra/scripts/build.sh
	infra/scripts/dev.sh

## Test it: template lint, unit, integration and end-to-end tests on a private local stack
test: $(TOOLS) $(SCHEMATHESIS)
	infra/scripts/test.sh

## Only the persistence test of `make dev`'s stack (make test runs it too)
test-persistence: $(TOOLS)
	infra/scripts/test-persistence.sh

## The API's OpenAPI 3.1 document, derived from the handlers (a test fails when docs/openapi.json is stale)
openapi:
	infra/scripts/build.sh -q
	target/debug/devstack openapi > docs/openapi.json

## Formatting and lints (CI runs these too)
check:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

LOCAL_AWS := AWS_ENDPOINT_URL=http://127.0.0.1:$${MOTO_PORT:-4566} AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:$${DYNAMODB_PORT:-8000} AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local

## A signed-in session on the running `make dev` stack: make token EMAIL=ada@example.com ROLE=org_admin ORG=demo
token:
	infra/scripts/build.sh -q
	$(LOCAL_AWS) target/debug/devstack token --email "$(EMAIL)" --role "$(or $(ROLE),student)" $(if $(ORG),--org "$(ORG)")

## A secret of the running `make dev` stack, e.g. make -s secret NAME=SparkSsoSecret
secret:
	infra/scripts/build.sh -q
	$(LOCAL_AWS) target/debug/devstack secret "$(NAME)"

## The emails the `make dev` stack sent (sign-in links, invitations), e.g. make -s mail TO=gran@example.com
mail:
	python3 infra/scripts/mail.py $(TO)

## Forget the local data of `make dev` (stop it first)
reset:
	rm -rf .local/dev

## Build every function for arm64 as a deployment does (.aws-sam/build, zips in .aws-sam/zips); slow.
## Default: one cargo-lambda build of all binaries, then `sam build`; SAM=1: plain `sam build` (slower)
sam-build: $(TOOLS)
	SAM=$(SAM) infra/scripts/sam-build.sh

## Cold start, zip size and memory of every function next to a hello-world Lambda
bench:
	bench/coldstart

## Fuzz the parsers of untrusted bytes (nightly + cargo-fuzz; not part of `make test`), FUZZ_SECONDS per
## target (default 120), e.g. make fuzz FUZZ_SECONDS=600 TARGETS="jwt_internal webhook_url"; see fuzz/README.md
fuzz:
	FUZZ_SECONDS=$(or $(FUZZ_SECONDS),120) fuzz/run.sh $(TARGETS)

clean:
	rm -rf target target-lambda .aws-sam

# The two commands: `make demo` runs the factory end to end, `make test` the whole suite.
.PHONY: setup demo test image lint

setup:
	bash scripts/setup.sh

image:
	bash infra/sandbox/build-image.sh factory-sandbox:latest

demo:
	@bash scripts/demo.sh

test:
	@bash scripts/setup.sh
	@bash scripts/test.sh

lint:
	uv run ruff check .
	uv run ruff format --check .
	uv run mypy

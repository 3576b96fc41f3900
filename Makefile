# The two commands a newcomer needs: `make serve` and `make test`.
# Each first runs scripts/bootstrap.sh, which is silent when nothing changed.
# PYTHON=/path/to/python3.12 make test: (re)build .venv with that interpreter.
.PHONY: serve test demo bench bench-store

serve:  ## run the scheduler on :5010 with the embedded store
	@scripts/bootstrap.sh
	.venv/bin/trio-scheduler serve --config config/scheduler.toml $(ARGS)

test:  ## the whole test suite (starts its own redis-server and Redis Cluster on free ports)
	@scripts/bootstrap.sh --with-redis
	.venv/bin/python -m pytest $(ARGS)

demo:  ## a server, two fake nodes and a fake browser, in one terminal
	@scripts/bootstrap.sh
	.venv/bin/python scripts/demo.py

bench-store:  ## store latency and CPU per reservation (embedded store; add ARGS=--redis-url=…)
	@scripts/bootstrap.sh
	.venv/bin/python scripts/bench_store.py $(ARGS)

bench:  ## load benchmark: server, browsers and nodes in separate processes (ARGS=--sessions 100 …)
	@scripts/bootstrap.sh --with-bench
	.venv/bin/python scripts/bench.py $(ARGS)

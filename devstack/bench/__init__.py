"""`make bench`: the money path measured end to end, with the database's own ceiling beside it.

One run (``python -m devstack.bench``, options in ``--help``; ``make bench
BENCH_ARGS=...``) against the running local mesh, everything on 127.0.0.1 and
bounded in time and count:

- **ceiling** (ceiling.py): pgbench doing one payment's ledger work per
  transaction on a scratch database of the same PostgreSQL, at 1 and 16 clients;
- **closed-loop scenarios** (scenarios.py) at several concurrencies:
  wallet-to-wallet payments over HTTP/JSON with JWTs through Envoy (wrk),
  over gRPC through Envoy and straight to payment_svc (ghz), card deposits,
  and many payers paying one hot merchant wallet;
- **open loop** (vegeta): the HTTP payment at a fixed arrival rate, half the
  saturating rate measured in the same run, for latency under load;
- for each step: payments/s, p50/p95/p99, errors by kind, CPU per successful
  payment by component (cpu.py), and how long the event pipeline took to drain
  (checks.py);
- **the ledger check** (checks.py), which fails the run (exit 1);
- the report (report.py): a table on stdout and ``.run/bench/<timestamp>.md``,
  ``.json`` and ``.png``.

docs/performance.md says how to read the figures.
"""

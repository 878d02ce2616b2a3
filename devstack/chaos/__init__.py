"""`make chaos SEED=n`: a seeded fault harness that proves money safety under faults on every run.

One run (``python -m devstack.chaos --seed 7``, options: ``--help``):

1. starts its own test-profile stack in ``.run/chaos-<port base>`` (port base
   ``PAYMESH_TEST_PORT_BASE``, default 36000), from empty databases and topics;
2. runs a workload through Envoy like a real client (workload.py): users and
   merchants with real JWTs, wallets, card deposits, wallet payments, manual
   captures and cancels, refunds, payouts; every request carries an
   Idempotency-Key and is retried with it on 503/504/409-in-use/connection
   errors a bounded number of times (client.py), and every attempt is recorded;
3. meanwhile injects the faults of a schedule drawn from ``random.Random(seed)``
   (schedule.py, pure; faults.py carries it out): kill -9 and SIGTERM of each
   service, kill -9 of PostgreSQL's postmaster, SIGSTOP/SIGCONT of Kafka and
   Redis, processor latency above payment_svc's timeout, 5xx bursts, lost
   responses, hangs and dropped webhooks;
4. settles (settle.py): restores everything and waits, bounded, for the
   recovery workers, webhooks and polls, outbox relays and consumers;
5. reads every store (collect.py: the services' databases, the processor
   simulator's books, Kafka from the beginning, the mail sink, the harness's
   own webhook receiver) and checks them (check_*.py, pure functions over
   model.py's snapshot), then prints the seed, the faults, a summary and each
   check (report.py) and exits 1 on any violation.

docs/reliability.md describes each check and the figures of a long run.
"""

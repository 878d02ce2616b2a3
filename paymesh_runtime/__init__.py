"""paymesh_runtime: what every paymesh service needs and nothing more.

Server bootstrap (health, reflection, interceptors, graceful shutdown),
typed settings, the database engine, telemetry, the error model, money rules,
pagination tokens and the transactional outbox. Services import from here;
no service imports another service's package.
"""

from alembic import context

from paymesh_runtime.migrations import run_env

run_env(context)

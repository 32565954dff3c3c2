"""The security tier's engines: the e2e tier's shared `mmrag up --auth` (`tests/e2e/conftest.py`), each test's
tenants made with `new_tenant` (a key per tenant and role).

Imported, not copied: one definition of the shared engine. A pytest worker that runs modules of both tiers starts
it once per tier (a fixture is per conftest), which `make test` pays for on its two workers.
"""

from tests.e2e.conftest import SHARED_ENV, new_tenant, shared_engine

__all__ = ["SHARED_ENV", "new_tenant", "shared_engine"]

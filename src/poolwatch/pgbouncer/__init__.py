"""PgBouncer: a small client for its admin console (:mod:`.console`), shared by the exporter
and ``poolwatch doctor``.

Example::

    async with await AdminConsole.connect("postgresql://stats@127.0.0.1:6432/pgbouncer") as c:
        pools = await c.show("POOLS")
"""

from poolwatch.pgbouncer.console import SHOW_COMMANDS, AdminConsole, Rows
from poolwatch.pgbouncer.target import ConsoleError

__all__ = ["SHOW_COMMANDS", "AdminConsole", "ConsoleError", "Rows"]

"""``EventDBXClient`` and ``AsyncEventDBXClient``: keyword arguments, validation and result
classes over the one Rust client of ``eventdbx._core``.

Both clients build the same requests (``_commands._Commands``) and differ only in how one runs:
the synchronous client blocks with the GIL released, the asynchronous one awaits. Writes return
the stored JSON, or ``True`` for a client made with ``verbose=False``: the constructor's
overloads make that visible to type checkers (``EventDBXClient[str]`` or ``[bool]``).
"""

from ._async_client import AsyncEventDBXClient
from ._sync_client import EventDBXClient

__all__ = ["EventDBXClient", "AsyncEventDBXClient"]

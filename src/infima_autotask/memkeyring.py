"""An in-memory keyring backend: the demo and the tests use it so no real keyring is touched."""

from __future__ import annotations

from keyring.backend import KeyringBackend


class MemoryKeyring(KeyringBackend):
    """Keeps passwords in a dict for the life of the process.

    It declares no ``priority``, so keyring never picks it by itself: only
    ``keyring.set_keyring(MemoryKeyring())`` uses it. (With a priority, merely importing this
    module made it every command's default on a server without a keyring, and secrets stored
    by ``connect`` vanished with the process.)
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._store: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self._store.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self._store[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self._store.pop((service, username), None)

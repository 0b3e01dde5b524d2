"""Who may do what: local accounts with hashed passwords, and the roles the UI enforces.

Roles form a ladder; each can do what the ones below it can:

    viewer    look: the lake, SQL (read-only), similar images, queues, metrics, batches sent
    reviewer  + decide (accept/reject), narrow and save sets, make queues
    exporter  + export for labelling, import labels
    admin     + compute and write metrics, regression checks and model cards

``ACTIONS`` names every action the UI checks and the least role it needs; the pages a role
sees follow from it (ui/auth.py). Local accounts live in a JSON file that ``edgemine user``
writes (``{"users": {name: {"role": ..., "password": "scrypt$..."}}}``, mode 0600) or inline in
$EDGEMINE_ACCOUNTS (``name:role:hash`` per line, for containers whose secrets come in the
environment). Passwords are hashed with scrypt (hashlib, a memory-hard KDF; OWASP's
parameters) and compared in constant time.

>>> h = hash_password("correct horse")
>>> verify_password("correct horse", h), verify_password("wrong", h)
(True, False)
>>> may("reviewer", "decide"), may("viewer", "decide"), may("admin", "export")
(True, False, True)
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mining.core.config import AuthConfig
from mining.core.errors import AccessError, ConfigError

ROLES = ("viewer", "reviewer", "exporter", "admin")  # the ladder, lowest first
ACTIONS = {  # action -> the least role that may do it
    "view": "viewer",
    "query": "viewer",
    "decide": "reviewer",
    "narrow": "reviewer",
    "save_set": "reviewer",
    "make_queue": "reviewer",
    "export": "exporter",
    "import_labels": "exporter",
    "write_metrics": "admin",
}
NAME = re.compile(r"[A-Za-z0-9._@+-]{1,64}")  # account names: what a log line and a reviews row can hold
MIN_PASSWORD = 8
# scrypt at OWASP's recommended cost (N=2^17, r=8, p=1: 128 MiB, about 0.3 s here), stored with the hash.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**17, 8, 1


@dataclass(frozen=True)
class Identity:
    """Who is using the UI: the name recorded on what they do, and their role."""

    name: str
    role: str
    via: str  # "account", "proxy", "oidc" or "local" (no login: the machine's user on localhost)


def may(role: str, action: str) -> bool:
    """Whether ``role`` may do ``action`` (a key of ACTIONS)."""
    return ROLES.index(role) >= ROLES.index(ACTIONS[action])


def require(identity: Identity, action: str) -> None:
    """Raise AccessError unless ``identity`` may do ``action``."""
    if not may(identity.role, action):
        raise AccessError(f"{identity.name} ({identity.role}) may not {action.replace('_', ' ')}: "
                          f"it needs the role {ACTIONS[action]}; an admin changes roles with `edgemine user add`")


def check_role(role: str, where: str = "role") -> str:
    if role not in ROLES:
        raise ConfigError(f"{where}: unknown role {role!r}; roles: {', '.join(ROLES)}")
    return role


def login_mode(auth: AuthConfig, env: Mapping[str, str] | None = None) -> str:
    """How the UI knows who is using it (config [auth]): ``proxy`` (a trusted header), ``oidc``
    (st.login), ``accounts`` (local accounts exist) or ``local`` (no login: localhost only)."""
    if auth.proxy_header:
        return "proxy"
    if auth.oidc:
        return "oidc"
    return "accounts" if load_accounts(auth.accounts, env) else "local"


# -- passwords ------------------------------------------------------------------------------
def hash_password(password: str, *, n: int = SCRYPT_N) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64), a fresh 16-byte salt each time."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, n, SCRYPT_R, SCRYPT_P)
    return "$".join(["scrypt", str(n), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(digest)])


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (from hash_password); False for a malformed hash."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest, validate=True)
        return hmac.compare_digest(_scrypt(password, base64.b64decode(salt, validate=True), int(n), int(r), int(p)),
                                   expected)
    except ValueError:  # wrong field count, bad base64 or numbers, scrypt parameters it refuses
        return False


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=32)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@functools.cache
def _decoy() -> str:
    """A hash of nothing anyone knows: an unknown name costs the same scrypt as a wrong
    password, so the time a login takes does not say whether the account exists."""
    return hash_password(secrets.token_hex(16))


# -- accounts -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Account:
    name: str
    role: str
    password: str  # the scrypt hash


def load_accounts(path: str = "", env: Mapping[str, str] | None = None) -> dict[str, Account]:
    """The local accounts: from the JSON file ``path`` (if given) and $EDGEMINE_ACCOUNTS."""
    env = os.environ if env is None else env
    accounts: dict[str, Account] = {}
    if path:
        accounts.update(_read_file(Path(path)))
    for number, line in enumerate(env.get("EDGEMINE_ACCOUNTS", "").splitlines(), 1):
        if line.strip():
            account = _parse_inline(line.strip(), f"$EDGEMINE_ACCOUNTS line {number}")
            accounts[account.name] = account
    return accounts


def authenticate(accounts: Mapping[str, Account], name: str, password: str) -> Identity:
    """The identity of ``name`` if ``password`` is theirs; AccessError (one message for both
    an unknown name and a wrong password) otherwise."""
    account = accounts.get(name)
    ok = verify_password(password, account.password if account else _decoy())
    if not (ok and account):
        raise AccessError("wrong name or password")
    return Identity(account.name, account.role, "account")


def add_account(path: str, name: str, role: str, password: str) -> bool:
    """Add or change (name's role and password) an account in the file ``path``, written
    atomically with mode 0600; True if it was new."""
    if not NAME.fullmatch(name):
        raise ConfigError(f"account name {name!r}: use 1-64 letters, digits and . _ @ + -")
    check_role(role)
    if len(password) < MIN_PASSWORD:
        raise ConfigError(f"the password needs at least {MIN_PASSWORD} characters")
    file = Path(path)
    accounts = _read_file(file) if file.exists() else {}
    new = name not in accounts
    accounts[name] = Account(name, role, hash_password(password))
    _write_file(file, accounts)
    return new


def remove_account(path: str, name: str) -> bool:
    """Remove ``name`` from the file; True if it was there."""
    file = Path(path)
    accounts = _read_file(file) if file.exists() else {}
    if accounts.pop(name, None) is None:
        return False
    _write_file(file, accounts)
    return True


def _read_file(path: Path) -> dict[str, Account]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"accounts file {path} does not exist; create it with `edgemine user add NAME --role ROLE "
                          f"--accounts {path}`") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"accounts file {path} cannot be read as JSON: {e}") from None
    users = data.get("users") if isinstance(data, dict) else None
    if not isinstance(users, dict):
        raise ConfigError(f'accounts file {path}: expected {{"users": {{name: {{"role": ..., "password": ...}}}}}}')
    accounts = {}
    for name, entry in users.items():
        if not (NAME.fullmatch(name) and isinstance(entry, dict) and isinstance(entry.get("password"), str)):
            raise ConfigError(f"accounts file {path}: account {name!r} needs a valid name, a role and a password hash")
        accounts[name] = Account(name, check_role(entry.get("role"), f"accounts file {path}, {name}"),
                                 entry["password"])
    return accounts


def _write_file(path: Path, accounts: Mapping[str, Account]) -> None:
    data = {"users": {a.name: {"role": a.role, "password": a.password} for a in accounts.values()}}
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
    os.replace(temporary, path)


def _parse_inline(line: str, where: str) -> Account:
    name, role, password = (line.split(":", 2) + ["", ""])[:3]
    if not (NAME.fullmatch(name) and password):
        raise ConfigError(f"{where}: expected name:role:hash (the hash from `edgemine user hash`)")
    return Account(name, check_role(role, where), password)

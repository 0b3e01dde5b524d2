"""Who may use the UI: `user add`, `user remove`, `user list`, `user hash` (docs/SECURITY.md).

The accounts file is the config's [auth] accounts (or $EDGEMINE_ACCOUNTS_FILE), or ``--accounts``.
A password is asked twice on a terminal, else read as the first line of stdin (a secret manager's
pipe); it is never a flag, which would leave it in the shell's history and the process list.
"""

from __future__ import annotations

import argparse
import sys

from jobs.cli.common import UsageError, print_result
from mining.core.config import Config


def add_user(commands, add) -> None:
    from mining.core import accounts  # hashlib and more: imported by `user` only

    user = commands.add_parser("user", help="local accounts of the review UI and their roles")
    actions = user.add_subparsers(title="action", metavar="ACTION")
    user_add = add(actions, "add", cmd_user_add, "add an account, or change its role and password")
    user_add.add_argument("name")
    user_add.add_argument("--role", required=True, choices=accounts.ROLES,
                          help="viewer < reviewer < exporter < admin (each can do what the ones before can)")
    _accounts_flag(user_add)
    user_remove = add(actions, "remove", cmd_user_remove, "remove an account")
    user_remove.add_argument("name")
    _accounts_flag(user_remove)
    _accounts_flag(add(actions, "list", cmd_user_list, "list the accounts and their roles"))
    add(actions, "hash", cmd_user_hash, "print a password's hash, for $EDGEMINE_ACCOUNTS (name:role:hash)")


def _accounts_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--accounts", help="the accounts file (default: the config's [auth] accounts, "
                                           "$EDGEMINE_ACCOUNTS_FILE)")


def _accounts_file(args: argparse.Namespace, config: Config) -> str:
    path = args.accounts or config.auth.accounts
    if not path:
        raise UsageError("no accounts file: pass --accounts FILE (and set [auth] accounts = FILE in the config "
                         "so the UI reads it)")
    return path


def cmd_user_add(args: argparse.Namespace, config: Config) -> int:
    from mining.core import accounts  # hashlib and more: imported by `user` only

    path = _accounts_file(args, config)
    new = accounts.add_account(path, args.name, args.role, _read_password())
    print_result(args, {"name": args.name, "role": args.role, "accounts": path, "new": new},
                 lambda r: print(f"{'added' if r['new'] else 'changed'} {r['name']} ({r['role']}) in {r['accounts']}"))
    return 0


def cmd_user_remove(args: argparse.Namespace, config: Config) -> int:
    from mining.core import accounts  # hashlib and more: imported by `user` only

    path = _accounts_file(args, config)
    if not accounts.remove_account(path, args.name):
        raise UsageError(f"no account {args.name!r} in {path}; `edgemine user list` shows them")
    print_result(args, {"name": args.name, "accounts": path}, lambda r: print(f"removed {r['name']}"))
    return 0


def cmd_user_list(args: argparse.Namespace, config: Config) -> int:
    from mining.core import accounts  # hashlib and more: imported by `user` only

    found = accounts.load_accounts(args.accounts or config.auth.accounts)
    rows = [{"name": a.name, "role": a.role} for a in sorted(found.values(), key=lambda a: a.name)]
    print_result(args, rows, lambda rows: print("\n".join(f"{r['name']}\t{r['role']}" for r in rows)
                                            or "no accounts: `edgemine user add NAME --role ROLE --accounts FILE`"))
    return 0


def cmd_user_hash(args: argparse.Namespace, config: Config) -> int:
    from mining.core import accounts  # hashlib and more: imported by `user` only

    print(accounts.hash_password(_read_password()))
    return 0


def _read_password() -> str:
    import getpass

    from mining.core import accounts  # hashlib and more: imported by `user` only

    if not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise UsageError("the two passwords differ; nothing changed")
    if len(password) < accounts.MIN_PASSWORD:
        raise UsageError(f"the password needs at least {accounts.MIN_PASSWORD} characters; nothing changed")
    return password

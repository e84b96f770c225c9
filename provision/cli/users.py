"""`provision users add|passwd|remove|list`: who may act on the dashboard (reading needs no login).

A password is read from the terminal twice (not echoed), or from standard input with ``--password-stdin``
(one line, for scripts); it is never an argument, so it stays out of the shell history and ``ps``. The users
live in the server's store (STATE/provision.db), made when missing, so users can be added before the first
``provision serve``.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any, TextIO

from provision.cli.common import DEFAULT_STATE, Parser, UsageError, dump, state_dir_of


def _store(args: argparse.Namespace) -> Any:
    from provision.store import Store

    return Store(state_dir_of(args) / "provision.db")


def _password(args: argparse.Namespace) -> str:
    from provision.passwords import password_problem

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise UsageError("no terminal to ask the password on: give it on standard input with --password-stdin")
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("the same password again: ") != password:
            raise UsageError("the two passwords differ: nothing changed")
    problem = password_problem(password, args.name)
    if problem:
        raise UsageError(f"{problem}: nothing changed")
    return password


def cmd_users_add(args: argparse.Namespace, out: TextIO) -> int:
    password = _password(args)
    with _store(args) as store:
        store.add_user(args.name, password)
    out.write(f"user {args.name} added: it can log in to the dashboard\n")
    return 0


def cmd_users_passwd(args: argparse.Namespace, out: TextIO) -> int:
    password = _password(args)
    with _store(args) as store:
        store.set_password(args.name, password)
    out.write(f"password of {args.name} changed; its sessions ended\n")
    return 0


def cmd_users_remove(args: argparse.Namespace, out: TextIO) -> int:
    with _store(args) as store:
        store.remove_user(args.name)
    out.write(f"user {args.name} removed; its sessions ended (what it did stays in the events)\n")
    return 0


def cmd_users_list(args: argparse.Namespace, out: TextIO) -> int:
    import time

    with _store(args) as store:
        users = store.users()
    if args.json:
        dump([{"name": u.name, "created": u.created, "changed": u.changed} for u in users], out)
        return 0
    if not users:
        out.write("no users: reading the dashboard needs none; provision users add NAME lets someone act\n")
    for u in users:
        changed = time.strftime("%Y-%m-%d %H:%M", time.localtime(u.changed))
        out.write(f"{u.name:32}  password changed {changed}\n")
    return 0


def add_commands(sub: Any) -> None:
    users = sub.add_parser("users", help="who may act on the dashboard")
    usub = users.add_subparsers(dest="users_command", metavar="SUBCOMMAND", parser_class=Parser, required=True)

    def command(name: str, help_text: str, func: Any, *, named: bool = True, password: bool = False) -> None:
        p = usub.add_parser(name, help=help_text, description=help_text)
        if named:
            p.add_argument("name", metavar="NAME", help="the user's name (a-z first, then a-z, 0-9, '.', '_', '-')")
        if password:
            p.add_argument("--password-stdin", action="store_true",
                           help="read the password from standard input (one line) instead of the terminal")  # fmt: skip
        where = p.add_mutually_exclusive_group()
        where.add_argument("--state-dir", metavar="DIR", help=f"the server's state directory (default: "
                           f"{DEFAULT_STATE})")  # fmt: skip
        where.add_argument("--config", metavar="FILE", help="the server's YAML configuration (for its state_dir)")
        if not named:
            p.add_argument("--json", action="store_true", help="JSON output")
        p.set_defaults(func=func)

    command("add", "add a user who may log in to the dashboard and act", cmd_users_add, password=True)
    command("passwd", "change a user's password (its sessions end)", cmd_users_passwd, password=True)
    command("remove", "remove a user (its sessions end)", cmd_users_remove)
    command("list", "list the users", cmd_users_list, named=False)

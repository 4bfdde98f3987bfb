"""An aiosmtpd handler that stores every message exactly as received, for the Rust test kit.

shopfds-testkit's SmtpSink runs
    python -m aiosmtpd -n -u -l 127.0.0.1:PORT -c smtp_sink.Sink DIRECTORY
with PYTHONPATH=interop/python. aiosmtpd's own Mailbox handler re-serialises the message through
Python's email package (refolding headers), so this handler keeps the raw DATA bytes instead:
for message N it writes `N.eml` (the bytes, dot-unstuffed) and then `N.json` (envelope: mail_from,
rcpt_tos), each via a rename, so a reader that sees `N.json` also sees a complete `N.eml`.

Recipients whose local part starts with `tempfail` get `451` and with `reject` get `550`, so tests
can exercise an SMTP client's transient and permanent failure handling against a real server.
A message to a recipient starting with `hold` is stored at once, but its `250` reply waits until a
file named `release` exists in the directory: a test can act while the server holds a message it
has received and not yet acknowledged.
A message to a recipient whose local part starts with `slow<ms>` (e.g. `slow800.ann@…`) is stored
at once and answered `250` only `ms` milliseconds later (at most 10 s): a slow mail server, so a
client can be stopped or cut while it waits for the reply to a message already accepted.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import time

_SLOW = re.compile(r"slow(\d{1,5})")


class Sink:
    def __init__(self, directory: str):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self._seq = itertools.count(1)

    @classmethod
    def from_cli(cls, parser, *args):
        if len(args) != 1:
            parser.error("smtp_sink.Sink needs exactly one argument: the output directory")
        return cls(args[0])

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0].lower()
        if local.startswith("tempfail"):
            return "451 4.3.0 Temporary failure (shopfds test sink)"
        if local.startswith("reject"):
            return "550 5.1.1 Mailbox unavailable (shopfds test sink)"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        name = f"{next(self._seq):06d}"
        raw = envelope.original_content
        if raw is None:
            content = envelope.content
            raw = content if isinstance(content, bytes) else content.encode("utf-8", "surrogateescape")
        self._write(f"{name}.eml", raw)
        meta = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "mail_options": list(envelope.mail_options),
            "peer": str(session.peer),
            "received_at": time.time(),
        }
        self._write(f"{name}.json", json.dumps(meta, ensure_ascii=False).encode("utf-8"))
        if any(r.split("@", 1)[0].lower().startswith("hold") for r in envelope.rcpt_tos):
            while not os.path.exists(os.path.join(self.directory, "release")):
                await asyncio.sleep(0.02)
        delays = [_SLOW.match(a.split("@", 1)[0].lower()) for a in envelope.rcpt_tos]
        delay_ms = max((int(m.group(1)) for m in delays if m), default=0)
        if delay_ms:
            await asyncio.sleep(min(delay_ms, 10_000) / 1000)
        return "250 2.0.0 Message accepted for delivery"

    def _write(self, name: str, data: bytes) -> None:
        tmp = os.path.join(self.directory, f".{name}.tmp")
        with open(tmp, "wb") as out:
            out.write(data)
        os.replace(tmp, os.path.join(self.directory, name))

"""Typed errors whose message is a sentence a user can act on.

Library code raises these for bad input; the CLI prints ``error: <message>`` on one line and exits
with status 2, never a traceback. Anything else escaping is a bug in the toolkit.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input or configuration: the message names the file or option and what to do."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        # One line, always: multi-line messages break the CLI's promise and log parsing.
        super().__init__(" ".join(str(message).split()))


class ImageError(UserError):
    """An image file that cannot be used (missing, corrupt, too large, wrong mode)."""


class MaskError(UserError):
    """A reference object's mask or annotation that cannot be used."""


class GeometryError(UserError):
    """Parameters for which no valid poison layout exists (alpha, beta, trigger size)."""


class ConfigError(UserError):
    """A configuration file or option with a wrong key, type or value."""


class OutputExistsError(UserError):
    """The output folder exists and ``--overwrite`` was not given."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM reached the command line (``utils/signals.py`` raises it in place of Python's
    KeyboardInterrupt, which Lightning turns into ``sys.exit(1)``). A BaseException, like
    KeyboardInterrupt, so ``except Exception`` never swallows it and every ``finally`` cleans up. The
    CLI prints one line (with ``note``: e.g. where the checkpoint is and how to resume) and exits with
    128 + the signal number: 130 for SIGINT, 143 for SIGTERM."""

    def __init__(self, signum: int, note: str = "") -> None:
        super().__init__(signum, note)
        self.signum = signum
        self.note = note

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def signal_name(self) -> str:
        import signal

        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"

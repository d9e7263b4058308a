"""One error root for everything the user should see, one subclass per exit code.

Only the CLI turns these into exit codes; everything else raises them.
"""


class SkycapError(Exception):
    """A failure with a message written for the person at the terminal."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  {self.hint}"


class DeployFailed(SkycapError):
    """The deploy or rollback ran and failed (exit 1)."""

    exit_code = 1


class BadInput(SkycapError):
    """Bad usage or input: nothing was changed (exit 2)."""

    exit_code = 2


class StageLocked(SkycapError):
    """Another deploy holds the stage's lock: nothing was changed (exit 3)."""

    exit_code = 3


class LockLost(SkycapError):
    """The stage lock was lost while the work ran (renewals failed past its TTL, it was broken or taken):
    the work stopped before its next change and its release says interrupted (exit 1)."""

    exit_code = 1


class RolloutTimeout(SkycapError):
    """The rollout did not finish in time (exit 4)."""

    exit_code = 4


class Interrupted(SkycapError):
    """Ctrl-C or SIGTERM: the lock was released and the ledger says so (exit 130)."""

    exit_code = 130


class CommandFailed(SkycapError):
    """An external program failed; carries what it printed (never shown raw unless asked)."""

    exit_code = 1

    def __init__(self, argv, returncode: int, stdout: str = "", stderr: str = "", message: str | None = None):
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(message or f"{argv[0]} exited with {returncode}: {stderr.strip()[-2000:]}")

"""The pipelines behind the commands, one module each; the CLI calls them through here."""

from skycap.commands import diff, history, render_command, scale, status, unlock
from skycap.deploy import deploy
from skycap.rollback import rollback

__all__ = ["deploy", "rollback", "status", "history", "render_command", "diff", "scale", "unlock"]

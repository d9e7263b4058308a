"""One module per command that is not the flow: status, history, render, diff, scale, unlock, and the
commands for services that run (logs, exec, restart, doctor), whose shared helpers are in running/."""

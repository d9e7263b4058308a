"""Legacy VM services over SSH: hosts (Fabric, host keys, timeouts), the shell scripts run on them (remote.py),
and a deploy's releases/current/shared layout on each host (deploy.py)."""

"""What the commands for services that run (logs, exec, restart, doctor) share, alike for pods and VM hosts.

targets.py finds what they act on (a service, its pods, its hosts), output.py writes the lines of many
sources to one stream, remote.py runs a command on a host for as long as Skycap stays attached to it,
rest.py reads the Kubernetes API with the standard library only."""

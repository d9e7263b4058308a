"""Commands for services that run: logs, exec, restart and doctor, alike for pods and VM hosts.

One module per command; targets.py finds what they act on (a service, its pods, its hosts),
output.py writes the lines of many sources to one stream, remote.py runs a command on a host
for as long as Skycap stays attached to it."""

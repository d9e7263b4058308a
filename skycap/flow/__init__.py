"""The flow: what a deploy and a rollback do, as named steps (steps.py), and the project's tasks.py
hooked on them and run against a stage (hooks.py, commands.py)."""

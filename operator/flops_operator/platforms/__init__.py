"""Where services run: one async protocol (base.py) and its implementations."""

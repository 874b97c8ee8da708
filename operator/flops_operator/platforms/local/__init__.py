"""The local platform: a whole FLOps project as supervised processes on one machine."""

from .commands import LOCAL_COMMANDS, local_command
from .layout import StateLayout, default_state_dir
from .platform import LocalPlatform
from .process import RestartPolicy

__all__ = ["LOCAL_COMMANDS", "LocalPlatform", "RestartPolicy", "StateLayout", "default_state_dir", "local_command"]

"""What `apply` is asked to reach on each node."""

from __future__ import annotations

from enum import Enum


class Goal(Enum):
    """The deploy goals, in Colmena's and nixos-rebuild's words."""

    BUILD = "build"  # evaluate and build only
    PUSH = "push"  # also copy the closure to the node
    SWITCH = "switch"  # set the system profile and activate now
    BOOT = "boot"  # set the system profile; activate at next boot
    TEST = "test"  # activate now, leave the profile (a reboot returns to the old system)
    DRY_ACTIVATE = "dry-activate"  # show what activation would change, change nothing

    @property
    def copies(self) -> bool:
        return self is not Goal.BUILD

    @property
    def sets_profile(self) -> bool:
        return self in (Goal.SWITCH, Goal.BOOT)

    @property
    def activates(self) -> bool:
        """Runs switch-to-configuration on the node (dry-activate included)."""
        return self in (Goal.SWITCH, Goal.BOOT, Goal.TEST, Goal.DRY_ACTIVATE)

    @property
    def changes_running_system(self) -> bool:
        return self in (Goal.SWITCH, Goal.TEST)

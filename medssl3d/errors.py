"""The error a user's input raises: one line naming the file (or key) and what to do.

:class:`InputError` is raised wherever a user's scan, label map, datalist or setting cannot be used
(medssl3d's data checks, ``data_prep`` commands, bundle start-up checks). It subclasses ``ValueError`` so
existing ``except ValueError`` code keeps working; tools that run a whole workflow (the bundle runner's error
hook, the command-line front ends) recognise it and print its message as the last line of a failed run.
"""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """A user's input cannot be used. The message names the file or key, what was seen and the fix."""

"""The errors a user can fix: the command line reports them in one line, with exit code 2.

Every such error derives from :class:`UserError`, so that
:func:`pneumo.runner.setup_logging`'s hook needs to know only this one class. Its message
names the value, file or folder at fault and says what to do about it.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's parameters, data, cache folder or machine, not with the code."""


class CacheError(UserError):
    """The results folder cannot be used: not writable, inside the data folder, or damaged."""

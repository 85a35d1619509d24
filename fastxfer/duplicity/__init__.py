"""duplicity backend ``fastxfer+s3://bucket/prefix`` and the ``fastxfer-duplicity`` command.

duplicity has no plugin mechanism: the ``fastxfer-duplicity`` console script
(:mod:`fastxfer.duplicity.cli`) registers the scheme when it is imported and
then runs duplicity's own entry point, so it takes every duplicity command and
option.  :mod:`~fastxfer.duplicity.backend` is the backend (the only modules
of fastxfer that import duplicity are it and the console script);
:mod:`~fastxfer.duplicity.settings` reads the ``FASTXFER_*`` environment.

Importing this package does not import duplicity.
"""

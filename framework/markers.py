"""The project token and the pluggy markers built from it.

One token names everything a plugin author meets: the pluggy project name, the ``framework_``
hook prefix, the ``framework`` entry-point group and the ``FRAMEWORK_*`` environment variables.
It is chosen once and never changes.
"""

import pluggy

PROJECT = "framework"
ENTRY_POINT_GROUP = "framework"
DISABLE_PLUGINS_ENV = "FRAMEWORK_DISABLE_PLUGINS"
DISABLE_COMPONENTS_ENV = "FRAMEWORK_DISABLE_COMPONENTS"
DISABLE_AUTOLOAD_ENV = "FRAMEWORK_DISABLE_PLUGIN_AUTOLOAD"
TRACE_ENV = "FRAMEWORK_TRACE"  # framework/trace.py

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

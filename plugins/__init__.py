"""The built-in plugins, one module each.

Imported as ``framework_plugins`` (never ``plugins``: see framework/locations.py) and registered
by framework.plugin_manager through the same path as third-party plugins. Each module's name is
its plugin name, which FRAMEWORK_DISABLE_PLUGINS accepts.
"""

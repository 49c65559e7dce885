"""The embedded lite backends and built-in extensions, each an ordinary plugin (see host.BUILTIN_PLUGINS)."""

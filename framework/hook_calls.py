"""Plugin hooks called so that a failure names the plugin and the hook, and so that one plugin's
failure at the end of a fit does not keep the others from writing what they have.

pluggy calls every implementation of a hook in one call; an exception from one of them comes out
of that call with no word of whose it was, and the implementations after it are skipped. The loop
calls its hooks through :func:`call_hook`, which costs nothing until something fails (then the
traceback says which implementation raised), and its closing hooks through :func:`call_every`,
which calls each implementation on its own.
"""

from __future__ import annotations

from typing import Any, Callable

from framework.errors import FrameworkError, PluginError
from framework.trace import plugin_function

# What a plugin may raise that must not end the process as it stands: SystemExit(0) from a plugin
# would exit 0 and end a sweep early. KeyboardInterrupt stays an interruption.
PLUGIN_FAILURES = (Exception, SystemExit)


def failed_plugin(hook_caller: Any, error: BaseException) -> str | None:
    """The name of the plugin whose implementation of ``hook_caller`` raised ``error``: the
    innermost frame of the traceback that runs one of the implementations (for methods, on that
    plugin's own instance: two plugins may be instances of one class)."""
    owners: dict[Any, list[tuple[Any, str]]] = {}
    for impl in hook_caller.get_hookimpls():
        own = plugin_function(impl)  # not FRAMEWORK_TRACE's timer, which every implementation shares
        function = getattr(own, "__func__", own)
        code = getattr(function, "__code__", None)
        if code is not None:
            owners.setdefault(code, []).append((getattr(own, "__self__", None), impl.plugin_name))
    found = None
    traceback = error.__traceback__
    while traceback is not None:
        frame = traceback.tb_frame
        for instance, name in owners.get(frame.f_code, ()):
            if instance is None or frame.f_locals.get(frame.f_code.co_varnames[0]) is instance:
                found = name
        traceback = traceback.tb_next
    return found


def describe_failure(error: BaseException) -> str:
    """``TypeName: message`` (SystemExit says what it was asked to exit with)."""
    if isinstance(error, SystemExit):
        return f"SystemExit({error.code!r}) (a plugin may not end the process)"
    return f"{type(error).__name__}: {error}"


def plugin_error(hook_name: str, plugin: str | None, error: BaseException, context: str = "") -> PluginError:
    """The one-paragraph error that names the plugin, the hook and what the run was training."""
    who = f"plugin {plugin!r}" if plugin else "a plugin"
    where = f" ({context})" if context else ""
    return PluginError(f"{who} failed in {hook_name}{where}: {describe_failure(error)}")


def call_implementation(impl: Any, arguments: dict[str, Any]) -> Any:
    """One hook implementation, given the arguments it names (pluggy's opt-in arguments)."""
    return impl.function(**{name: arguments[name] for name in impl.argnames})


def call_hook(hook: Any, hook_name: str, context: str = "", **arguments: Any) -> Any:
    """``hook.<hook_name>(**arguments)``; a plugin's exception or SystemExit becomes a
    PluginError naming it. A FrameworkError is the plugin's own message to the user and is kept."""
    hook_caller = getattr(hook, hook_name)
    try:
        return hook_caller(**arguments)
    except FrameworkError:
        raise
    except PLUGIN_FAILURES as error:
        raise plugin_error(hook_name, failed_plugin(hook_caller, error), error, context) from error


def call_every(hook: Any, hook_name: str, context: str = "", on_failure: Callable[[Exception], None] | None = None,
               **arguments: Any) -> list[Exception]:
    """Call each implementation of ``hook_name`` in pluggy's order, each on its own, and return
    the failures: one plugin that fails does not stop the next from running. ``on_failure`` is
    told of each at once, so that the implementations after it can see it (a result marked failed)."""
    failures = []
    for impl in reversed(getattr(hook, hook_name).get_hookimpls()):  # pluggy calls the last first
        if impl.hookwrapper or impl.wrapper:
            continue  # a wrapper needs pluggy's own call; the hookspecs say these hooks take none
        try:
            call_implementation(impl, arguments)
        except FrameworkError as error:
            failures.append(error)
        except PLUGIN_FAILURES as error:
            failure = plugin_error(hook_name, impl.plugin_name, error, context)
            failure.__cause__ = error
            failures.append(failure)
        else:
            continue
        if on_failure is not None:
            on_failure(failures[-1])
    return failures

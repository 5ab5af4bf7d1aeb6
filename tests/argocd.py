"""The shipped Argo CD health checks (charts/skyfleet/argocd) run as Argo CD runs them.

Argo CD executes each check with the object bound to the global `obj` and only the base, table,
string and math libraries loaded; the same sandbox is rebuilt here with lupa's Lua 5.1 runtime
(Argo CD's gopher-lua speaks Lua 5.1). Used by the chart tier on built statuses and by the e2e
tier on live objects.
"""

from __future__ import annotations

from typing import Any

from lupa import lua51

from tests.chart.helpers import CHART

__all__ = ["health", "lua51", "script", "to_lua"]


def script(kind: str) -> str:
    return (CHART / "argocd" / "lib.lua").read_text() + "\n" + (CHART / "argocd" / f"{kind.lower()}.lua").read_text()


def to_lua(runtime: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return runtime.table_from({k: to_lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([to_lua(runtime, v) for v in value])
    return value


def health(kind: str, obj: dict[str, Any], source: str | None = None) -> tuple[str, str]:
    runtime = lua51.LuaRuntime(register_eval=False, register_builtins=False)
    assert runtime.lua_version == (5, 1)
    g = runtime.globals()
    # Argo CD's sandbox: no os, io, package loading or code loading.
    for name in ("os", "io", "require", "package", "dofile", "loadfile", "load", "loadstring", "debug"):
        g[name] = None
    g.obj = to_lua(runtime, obj)
    result = runtime.execute(source or script(kind))
    assert result is not None, f"the {kind} check returned nothing"
    status, message = result["status"], result["message"]
    assert isinstance(status, str)
    assert isinstance(message, str)
    assert message, "Argo CD shows the message; it must say something"
    return status, message

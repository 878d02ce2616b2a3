"""Prometheus (the Debian package), scraping every service replica and Envoy, with paymesh's alert rules.

One job per component, named after it (`auth`, `wallet`, `payment`,
`notify`, `envoy`): the `job` label the dashboards and alert rules group by,
the same the chart's ServiceMonitors give (`jobLabel:
app.kubernetes.io/component`). Envoy is scraped on its admin port's
`/stats/prometheus` (127.0.0.1 only). The alert rules are the chart's own
file (RULES), evaluated here too, so `make up` shows what would fire
(`/alerts` on the UI). Data lives in the run dir and is kept for RETENTION.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request

from devstack.components import Component, fingerprint
from devstack.ports import HOST, SERVICES
from devstack.procs import StackError

RULES = "charts/paymesh/files/observability/alerts.yaml"
RETENTION = "2d"
SCRAPE_INTERVAL = {"local": "5s", "test": "2s"}


class Prometheus(Component):
    name = "prometheus"
    start_timeout = 30.0
    stop_timeout = 15.0

    @property
    def config_path(self) -> str:
        return str(self.ctx.run_dir / "prometheus.yml")

    def address(self) -> str:
        return f"http://{HOST}:{self.ctx.ports.prometheus}"

    def ports(self) -> list[int]:
        return [self.ctx.ports.prometheus]

    def targets(self) -> dict[str, list[str]]:
        """Scrape targets by job: every replica's metrics port, and Envoy's admin port."""
        ports, replicas = self.ctx.ports, self.ctx.topology.replicas
        jobs = {
            service: [f"{HOST}:{ports.metrics(service, k)}" for k in range(1, replicas.get(service, 1) + 1)]
            for service in SERVICES
        }
        jobs["envoy"] = [f"{HOST}:{ports.envoy_admin}"]
        return jobs

    def rendered(self) -> str:
        interval = SCRAPE_INTERVAL.get(self.ctx.profile, "5s")
        jobs = []
        for job, targets in self.targets().items():
            path = "/stats/prometheus" if job == "envoy" else "/metrics"
            jobs.append(
                {
                    "job_name": job,
                    "metrics_path": path,
                    "static_configs": [{"targets": targets, "labels": {"profile": self.ctx.profile}}],
                }
            )
        config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(self.ctx.repo / RULES)],
            "scrape_configs": jobs,
        }
        # JSON is YAML: no YAML writer needed, and nothing to quote by hand.
        return json.dumps(config, indent=2) + "\n"

    def config_fingerprint(self) -> str:
        # Replicas added or removed change the targets: restart with the new list.
        return fingerprint(self.rendered())

    def prepare(self) -> None:
        (self.ctx.run_dir / "prometheus").mkdir(parents=True, exist_ok=True)
        (self.ctx.run_dir / "prometheus.yml").write_text(self.rendered())

    def command(self) -> list[str]:
        binary = shutil.which("prometheus")
        if binary is None:
            raise StackError("prometheus: not on PATH; run devstack/bootstrap.sh (Debian package prometheus)")
        return [
            binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.ctx.run_dir / 'prometheus'}",
            f"--storage.tsdb.retention.time={RETENTION}",
            f"--web.listen-address={HOST}:{self.ctx.ports.prometheus}",
            "--log.level=warn",
        ]

    def is_healthy(self) -> bool:
        try:
            # The URL is always http://127.0.0.1:<prometheus port>.
            with urllib.request.urlopen(f"{self.address()}/-/ready", timeout=2) as reply:  # noqa: S310
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):
            return False

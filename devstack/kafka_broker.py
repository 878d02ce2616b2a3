"""Kafka: a single KRaft node (broker + controller) from the jars in .tools/kafka/lib.

Readiness is a real metadata request through kcat. Topics are created with
Kafka's own Admin client (kafka-clients): the 3.9 broker artifact does not
ship TopicCommand (it lives in the separate kafka-tools artifact), so a
small Java program, run with the JDK's source launcher, does the creation.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.components import Component, Context
from devstack.ports import HOST
from devstack.procs import StackError, run_command

log = logging.getLogger("devstack")

BROKER_ID = 1


@dataclass(frozen=True)
class Topic:
    name: str
    partitions: int
    replication_factor: int = 1


# Every topic of the platform; created (if missing) each time Kafka starts.
TOPICS: tuple[Topic, ...] = (
    Topic("paymesh.payments.v1", 6),
    Topic("paymesh.wallets.v1", 6),
    Topic("paymesh.users.v1", 3),
    Topic("paymesh.notifications.dlq.v1", 3),
)

_CREATE_TOPICS_JAVA = """\
import java.util.*;
import java.util.concurrent.ExecutionException;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.common.KafkaFuture;
import org.apache.kafka.common.errors.TopicExistsException;

// Usage: CreateTopics <bootstrap> <name>:<partitions>:<replication factor>...
public class CreateTopics {
  public static void main(String[] args) throws Exception {
    Properties props = new Properties();
    props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
    List<NewTopic> topics = new ArrayList<>();
    for (int i = 1; i < args.length; i++) {
      String[] spec = args[i].split(":");
      topics.add(new NewTopic(spec[0], Integer.parseInt(spec[1]), Short.parseShort(spec[2])));
    }
    try (Admin admin = Admin.create(props)) {
      CreateTopicsResult result = admin.createTopics(topics);
      for (Map.Entry<String, KafkaFuture<Void>> entry : result.values().entrySet()) {
        try {
          entry.getValue().get();
          System.out.println("created " + entry.getKey());
        } catch (ExecutionException e) {
          if (!(e.getCause() instanceof TopicExistsException)) throw e;
          System.out.println("exists " + entry.getKey());
        }
      }
    }
  }
}
"""

_LOG4J = """\
log4j.rootLogger={level}, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
"""


def kafka_lib_dir(repo: Path) -> Path:
    lib = repo / ".tools" / "kafka" / "lib"
    if not any(lib.glob("kafka_2.13-*.jar")):
        raise StackError(f"kafka: no broker jars in {lib}; run devstack/bootstrap.sh")
    return lib


def _tool(name: str) -> str:
    binary = shutil.which(name)
    if binary is None:
        raise StackError(f"kafka: `{name}` not on PATH; run devstack/bootstrap.sh")
    return binary


class Kafka(Component):
    name = "kafka"
    start_timeout = 120.0  # a cold JVM on 2 busy cores can take a while
    stop_signal = signal.SIGTERM  # controlled shutdown
    stop_timeout = 45.0

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.home = ctx.run_dir / "kafka"
        self.data_dir = self.home / "data"
        self.properties_path = self.home / "server.properties"

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.ctx.ports.kafka}"

    def address(self) -> str:
        return self.bootstrap

    def ports(self) -> list[int]:
        return [self.ctx.ports.kafka, self.ctx.ports.kafka_controller]

    def _java(self, *args: str, heap: tuple[str, str] = ("128m", "256m"), log_level: str = "WARN") -> list[str]:
        log4j = self.home / f"log4j-{log_level.lower()}.properties"
        log4j.write_text(_LOG4J.format(level=log_level))
        classpath = f"{kafka_lib_dir(self.ctx.repo)}/*"
        return [
            _tool("java"),
            f"-Xms{heap[0]}",
            f"-Xmx{heap[1]}",
            f"-Dlog4j.configuration=file:{log4j}",
            "-cp",
            classpath,
            *args,
        ]

    # --- one-time setup -------------------------------------------------------
    def prepare(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.properties_path.write_text(self._server_properties())
        if not (self.data_dir / "meta.properties").exists():
            self._format_storage()

    def _server_properties(self) -> str:
        ports = self.ctx.ports
        settings = {
            "process.roles": "broker,controller",
            "node.id": str(BROKER_ID),
            "controller.quorum.voters": f"{BROKER_ID}@{HOST}:{ports.kafka_controller}",
            "listeners": f"PLAINTEXT://{HOST}:{ports.kafka},CONTROLLER://{HOST}:{ports.kafka_controller}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{ports.kafka}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "min.insync.replicas": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
        }
        return "".join(f"{key}={value}\n" for key, value in settings.items())

    def _format_storage(self) -> None:
        cluster_id = (
            run_command(
                self._java("kafka.tools.StorageTool", "random-uuid"),
                log_path=self.log_path,
                what="kafka: random-uuid",
                timeout=120,
            )
            .strip()
            .splitlines()[-1]
        )
        log.info("kafka: formatting %s (cluster %s)", self.data_dir, cluster_id)
        run_command(
            self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(self.properties_path)),
            log_path=self.log_path,
            what="kafka: storage format",
            timeout=120,
        )

    def command(self) -> list[str]:
        return self._java("kafka.Kafka", str(self.properties_path), heap=("256m", "512m"), log_level="INFO")

    # --- health -----------------------------------------------------------------
    def metadata(self) -> dict[str, Any] | None:
        """The cluster metadata as kcat -L -J reports it, or None if unreachable."""
        try:
            result = subprocess.run(
                [_tool("kcat"), "-b", self.bootstrap, "-L", "-J", "-m", "5"],
                capture_output=True,
                text=True,
                timeout=15,
            )
        except subprocess.TimeoutExpired:
            return None
        if result.returncode != 0:
            return None
        try:
            parsed: dict[str, Any] = json.loads(result.stdout)
        except json.JSONDecodeError:
            return None
        return parsed

    def is_healthy(self) -> bool:
        metadata = self.metadata()
        if metadata is None:
            return False
        return any(broker.get("id") == BROKER_ID for broker in metadata.get("brokers", []))

    def topic_partitions(self) -> dict[str, int]:
        """Existing topics and their partition counts."""
        metadata = self.metadata() or {}
        return {
            topic["topic"]: len(topic.get("partitions", []))
            for topic in metadata.get("topics", [])
            if not topic.get("error")
        }

    # --- topics -------------------------------------------------------------------
    def after_ready(self) -> None:
        existing = self.topic_partitions()
        missing = [topic for topic in TOPICS if topic.name not in existing]
        if missing:
            self._create_topics(missing)
        for topic in TOPICS:
            count = existing.get(topic.name)
            if count is not None and count != topic.partitions:
                log.warning("kafka: topic %s has %d partitions, expected %d", topic.name, count, topic.partitions)

    def _create_topics(self, topics: list[Topic]) -> None:
        source = self.home / "CreateTopics.java"
        source.write_text(_CREATE_TOPICS_JAVA)
        specs = [f"{t.name}:{t.partitions}:{t.replication_factor}" for t in topics]
        log.info("kafka: creating topics %s", ", ".join(t.name for t in topics))
        run_command(
            self._java(str(source), self.bootstrap, *specs),
            log_path=self.log_path,
            what="kafka: create topics",
            timeout=120,
        )

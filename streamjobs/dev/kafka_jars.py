"""The Apache Kafka distribution streamjobs runs locally: version, files and jars.

Owns the Kafka version, the three files a broker needs (Maven POM, ``server.properties``,
``log4j2.properties``; readable copies live in ``deploy/kafka/`` and a unit test keeps them
identical) and resolving the broker's runtime classpath from Maven Central into a cache
directory, once. Does not start or stop processes (:mod:`streamjobs.dev.kafka` does, through
:mod:`streamjobs.dev.processes`).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
from pathlib import Path

from streamjobs.dev.processes import locked, tail
from streamjobs.errors import ConfigError

logger = logging.getLogger(__name__)

_DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "kafka"
_MAVEN_TIMEOUT_S = 900.0

KAFKA_VERSION = "4.3.1"


#: ``deploy/kafka/pom.xml``: Kafka's broker plus the log4j2 backend its POMs leave out.
#: (The backslash-newline only keeps a long line under the line limit; it is not in the value.)
POM_XML = """<?xml version="1.0" encoding="UTF-8"?>
<!-- Resolves the runtime classpath of an Apache Kafka broker from Maven Central.
     No sources: `mvn dependency:copy-dependencies` gathers the jars into a cache directory
     (see streamjobs/dev/kafka.py), from which the broker runs as `java -cp ... kafka.Kafka`. -->
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 \
http://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.streamjobs.deploy</groupId>
  <artifactId>kafka-broker-runtime</artifactId>
  <version>0</version>
  <packaging>pom</packaging>

  <properties>
    <kafka.version>4.3.1</kafka.version>
    <log4j2.version>2.25.5</log4j2.version>
    <project.build.sourceEncoding>UTF-8</project.build.sourceEncoding>
  </properties>

  <dependencyManagement>
    <dependencies>
      <!-- one version for every log4j2 artifact, including the log4j-core kafka-server pulls in -->
      <dependency>
        <groupId>org.apache.logging.log4j</groupId>
        <artifactId>log4j-bom</artifactId>
        <version>${log4j2.version}</version>
        <type>pom</type>
        <scope>import</scope>
      </dependency>
    </dependencies>
  </dependencyManagement>

  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>${kafka.version}</version>
    </dependency>
    <!-- Kafka 4.x publishes no logging backend in its POMs and is on SLF4J 1.7 -->
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-api</artifactId>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
    </dependency>
  </dependencies>

  <build>
    <pluginManagement>
      <plugins>
        <plugin>
          <groupId>org.apache.maven.plugins</groupId>
          <artifactId>maven-dependency-plugin</artifactId>
          <version>3.8.1</version>
        </plugin>
      </plugins>
    </pluginManagement>
  </build>
</project>
"""

#: ``deploy/kafka/server.properties``: settings shared by every local broker; the per-instance
#: lines (listeners, quorum voters, log.dirs) are appended by :meth:`LocalBroker._properties`.
SERVER_PROPERTIES = """\
# Single-node Apache Kafka (KRaft, combined broker + controller) for development and tests.
# streamjobs/dev/kafka.py appends the per-instance lines: listeners, advertised.listeners,
# controller.quorum.voters and log.dirs. Everything binds and advertises 127.0.0.1, not
# localhost: librdkafka may resolve localhost to ::1 first.
process.roles=broker,controller
node.id=1
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT

# streamjobs creates and verifies its own topics; a typo must fail, not create a topic.
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=1
min.insync.replicas=1

# One node: internal topics can only have one replica, or group joins and
# init_transactions wait forever. One partition each keeps the first join fast.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1

# Tests join and leave groups constantly; the default 3 s delay would slow every one.
group.initial.rebalance.delay.ms=0
# KIP-848 groups (streamjobs' default protocol) keep session and heartbeat settings on the
# broker: a dead worker's partitions move after 10 s instead of 45 s.
group.consumer.min.session.timeout.ms=6000
group.consumer.session.timeout.ms=10000
group.consumer.min.heartbeat.interval.ms=500
group.consumer.heartbeat.interval.ms=1000

# Small machine: fewer threads, and a dedupe buffer sized for a small heap (default 128 MiB).
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=8388608
# Check for compactable logs every second so the status topic compacts observably in tests.
log.cleaner.backoff.ms=1000
"""

#: ``deploy/kafka/log4j2.properties``: console logging, redirected to ``<workdir>/broker.log``.
LOG4J2_PROPERTIES = """\
# Logging for the streamjobs development broker: everything to the console, which
# streamjobs/dev/kafka.py redirects to <workdir>/broker.log.
status = warn
name = streamjobs-broker

appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n

rootLogger.level = INFO
rootLogger.appenderRefs = stdout
rootLogger.appenderRef.stdout.ref = STDOUT

# Per-request logging is very chatty at INFO/DEBUG.
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.requestchannel.name = kafka.network.RequestChannel$
logger.requestchannel.level = WARN
"""


def default_cache_dir() -> Path:
    """Where the classpath and the :func:`up` brokers live: ``~/.cache/streamjobs``."""
    return Path.home() / ".cache" / "streamjobs"


def ensure_classpath(cache_dir: Path) -> Path:
    """Return the absolute ``<cache_dir>/kafka-<version>/libs``, filled by Maven the first time.

    Idempotent and safe to call concurrently: a lock file makes one caller download while the
    others wait, and the jars only appear under ``libs`` once complete. Re-resolves when the POM
    changes. Raises :class:`ConfigError` if ``java`` or ``mvn`` is missing or Maven fails.
    """
    home = cache_dir.resolve() / f"kafka-{KAFKA_VERSION}"
    libs = home / "libs"
    if _classpath_complete(home):
        return libs
    with locked(home / ".lock"):
        if not _classpath_complete(home):
            _resolve_classpath(home)
    return libs


def deploy_text(name: str, packaged: str) -> str:
    path = _DEPLOY_DIR / name
    return path.read_text(encoding="utf-8") if path.is_file() else packaged


def _pom_digest() -> str:
    return hashlib.sha256(deploy_text("pom.xml", POM_XML).encode()).hexdigest()


def _classpath_complete(home: Path) -> bool:
    stamp = home / "libs.sha256"
    return stamp.is_file() and stamp.read_text(encoding="ascii").strip() == _pom_digest()


def _resolve_classpath(home: Path) -> None:
    mvn = require_tool("mvn", "Maven, to fetch Kafka's jars from Maven Central")
    require_tool("java", "a Java 17+ runtime")
    pom = _DEPLOY_DIR / "pom.xml"
    if not pom.is_file():
        pom = home / "pom.xml"
        pom.write_text(POM_XML, encoding="utf-8")
    staging = home / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    command = [mvn, "-B", "-q", "-f", str(pom), "dependency:copy-dependencies"]
    command += ["-DincludeScope=runtime", f"-DoutputDirectory={staging}"]
    logger.info("resolving Kafka %s's classpath with Maven into %s", KAFKA_VERSION, home)
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_MAVEN_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ConfigError(f"mvn took over {_MAVEN_TIMEOUT_S:.0f}s: {' '.join(command)}") from None
    if done.returncode != 0 or not (staging / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file():
        raise ConfigError(
            f"mvn could not resolve Kafka {KAFKA_VERSION}'s classpath (exit {done.returncode};"
            f" it needs Maven Central or a filled ~/.m2): {' '.join(command)}\n"
            + tail(done.stdout + done.stderr)
        )
    shutil.rmtree(home / "libs", ignore_errors=True)
    staging.rename(home / "libs")
    (home / "libs.sha256").write_text(_pom_digest() + "\n", encoding="ascii")


def require_tool(name: str, purpose: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ConfigError(f"`{name}` is not on PATH; the local Kafka broker needs {purpose}")
    return found

#!/usr/bin/env bash
# Local stack: a single-node KRaft Apache Kafka broker and an Apicurio schema registry,
# both run from Maven Central jars on the JDK (no Docker here), and PostgreSQL (the
# analytics sink's database, from Debian packages), all bound to loopback.
#
#   scripts/stack.sh up       install what is missing, start all three, wait until ready
#   scripts/stack.sh down     stop them (SIGTERM, wait for exit)
#   scripts/stack.sh status   print what runs
#   scripts/stack.sh reset    down + wipe broker and database data (fresh next `up`)
#   scripts/stack.sh psql …   psql on the analytics database (e.g. -c 'SELECT …')
#   scripts/stack.sh tool …   one of Kafka's command-line tools (see below)
#   scripts/stack.sh broker kill [N] | stop [N] | start   fault injection (bench/chaos)
#
# ERP_STACK=cluster scripts/stack.sh up   three KRaft brokers (127.0.0.1:9092, :9192,
#   :9292; each also a controller) with replication factor 3 and min.insync.replicas 2
#   for every topic, the internal ones included. The mode is remembered in $RUN/mode
#   (down/status/broker need no flag) and the bootstrap list in $RUN/bootstrap, which
#   scripts/env.sh exports as ERP_BOOTSTRAP_SERVERS.
#
# ERP_STACK=secure scripts/stack.sh up   one node that authenticates every client (SASL
#   SCRAM-SHA-256 on 127.0.0.1:9092; the controller listener uses SASL PLAIN, since
#   SCRAM credentials live in the metadata the controller serves) and authorizes it
#   (StandardAuthorizer, no ACL = denied, super user `admin` only). One principal per
#   processor context (erp-order, erp-inventory, erp-payment, erp-shipping,
#   erp-customer), erp-client (command producers, the carrier) and erp-audit (the
#   checker); random passwords, made at format time, in $RUN/secure/credentials/
#   (<principal>.env for `set -a; source …`, admin.properties for Kafka's tools; 0600).
#   `erp acls | scripts/stack.sh acls` grants each principal only what it needs.
#
# Idempotent: `up` on a running stack only re-checks readiness.
# Everything lives under $ERP_CACHE (default ~/.cache/erp-saga), outside the clone.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
CACHE=${ERP_CACHE:-$HOME/.cache/erp-saga}
KAFKA_VERSION=4.4.0
APICURIO_VERSION=3.0.9
KAFKA_LIBS=$CACHE/kafka-$KAFKA_VERSION/libs
APICURIO_HOME=$CACHE/apicurio-$APICURIO_VERSION
RUN=$CACHE/run
KAFKA_PORT=${ERP_KAFKA_PORT:-9092}
CONTROLLER_PORT=${ERP_KAFKA_CONTROLLER_PORT:-9093}
REGISTRY_PORT=${ERP_REGISTRY_PORT:-8081}
# The mode of a running stack wins; ERP_STACK picks one for a stopped stack.
RUNNING_MODE=$(cat "$RUN/mode" 2>/dev/null || true)
MODE=${ERP_STACK:-${RUNNING_MODE:-single}}
case "$MODE" in
  single) NODES=1 ;;
  cluster) NODES=3 ;;
  secure) NODES=1 ;;
  *) printf '[stack] ERROR: ERP_STACK must be single, cluster or secure, not %s\n' "$MODE" >&2; exit 1 ;;
esac
# Node N (1-based) listens on KAFKA_PORT + 100(N-1), its controller on CONTROLLER_PORT + 100(N-1).
node_port() { echo $((KAFKA_PORT + 100 * ($1 - 1))); }
node_controller_port() { echo $((CONTROLLER_PORT + 100 * ($1 - 1))); }
node_dir() { case "$MODE" in single) echo "$RUN/kafka" ;; secure) echo "$RUN/secure/kafka" ;; *) echo "$RUN/cluster/kafka-$1" ;; esac; }
node_pid() { case "$MODE" in single) echo "$RUN/kafka.pid" ;; secure) echo "$RUN/secure/kafka.pid" ;; *) echo "$RUN/cluster/kafka-$1.pid" ;; esac; }
CREDENTIALS=$RUN/secure/credentials
PRINCIPALS="admin erp-order erp-inventory erp-payment erp-shipping erp-customer erp-client erp-audit"
# Kafka's tools talk to a secured node as the super user.
tool_auth() { if [ "$MODE" = secure ]; then echo "--command-config $CREDENTIALS/admin.properties"; fi; }
BOOTSTRAP=$(for n in $(seq 1 $NODES); do printf '127.0.0.1:%s,' "$(node_port "$n")"; done | sed 's/,$//')
REGISTRY_URL=http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7
PG_PORT=${ERP_PG_PORT:-5433}
PG_URL=postgres://erp@127.0.0.1:$PG_PORT/erp
# PostgreSQL runs as the `postgres` user when we are root, and that user cannot enter
# root's home: then the cluster lives under /var/lib.
if [ "$(id -u)" = 0 ]; then PG_DIR=${ERP_PG_DIR:-/var/lib/erp-saga/postgres}; else PG_DIR=${ERP_PG_DIR:-$RUN/postgres}; fi

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }

need_cmd() { command -v "$1" >/dev/null 2>&1; }

install_packages() {
  local missing=()
  need_cmd java || missing+=(openjdk-17-jre-headless)
  need_cmd mvn || missing+=(maven)
  need_cmd curl || missing+=(curl)
  pg_bin >/dev/null || missing+=(postgresql)
  if ((${#missing[@]})); then
    need_cmd apt-get || die "missing ${missing[*]} and no apt-get to install them"
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

fetch_kafka() {
  # The marker holds the pom's hash: a changed pom re-resolves the jars.
  local want; want=$(sha256sum "$here/stack/pom.xml" | cut -d' ' -f1)
  if [ "$(cat "$KAFKA_LIBS/.complete" 2>/dev/null)" = "$want" ]; then return; fi
  log "resolving Apache Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_LIBS"
  rm -rf "$KAFKA_LIBS"; mkdir -p "$KAFKA_LIBS"
  mvn -q -B -f "$here/stack/pom.xml" -Dkafka.version=$KAFKA_VERSION \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS" \
    || die "maven could not resolve the Kafka jars (see output above)"
  echo "$want" >"$KAFKA_LIBS/.complete"
}

fetch_apicurio() {
  if [ -f "$APICURIO_HOME/.complete" ]; then return; fi
  log "resolving Apicurio Registry $APICURIO_VERSION from Maven Central into $APICURIO_HOME"
  local dl=$CACHE/downloads
  mkdir -p "$dl"
  mvn -q -B dependency:copy -Dartifact=io.apicurio:apicurio-registry-app:$APICURIO_VERSION:tar.gz:all \
    -DoutputDirectory="$dl" || die "maven could not resolve apicurio-registry-app"
  rm -rf "$APICURIO_HOME"; mkdir -p "$APICURIO_HOME"
  tar xzf "$dl/apicurio-registry-app-$APICURIO_VERSION-all.tar.gz" -C "$APICURIO_HOME"
  touch "$APICURIO_HOME/.complete"
}

# The newest installed PostgreSQL's binaries (Debian keeps them off PATH).
pg_bin() {
  local d; d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

# PostgreSQL refuses to run as root: the cluster belongs to the package's `postgres`
# user when we are root, to us otherwise.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_ready() { "$(pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" 2>/dev/null; }

start_postgres() {
  local bin; bin=$(pg_bin) || die "PostgreSQL is not installed"
  local dir=$PG_DIR
  if pg_ready; then
    [ -f "$dir/data/postmaster.pid" ] || die "port $PG_PORT answers but not from a cluster this script started; stop it first"
    log "postgres already running on 127.0.0.1:$PG_PORT"
    return
  fi
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres: "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    # Trust on loopback only: a development database that never leaves this machine.
    as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1 \
      || die "initdb failed; see $dir/initdb.log"
    log "initialised a PostgreSQL cluster in $dir/data"
  fi
  log "starting postgres on 127.0.0.1:$PG_PORT"
  as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
    -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $dir" start >/dev/null \
    || die "postgres did not start; see $dir/postgres.log"
  local deadline=$((SECONDS + 60))
  until pg_ready; do
    ((SECONDS < deadline)) || die "postgres not ready after 60 s; see $dir/postgres.log"
    sleep 0.5
  done
  if ! "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc "SELECT 1 FROM pg_roles WHERE rolname='erp'" | grep -q 1; then
    "$bin/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -c "CREATE ROLE erp LOGIN" \
      -c "CREATE DATABASE erp OWNER erp" || die "could not create the erp role and database"
  fi
  log "postgres ready ($PG_URL)"
}

stop_postgres() {
  local bin; bin=$(pg_bin) || return 0
  if [ -f "$PG_DIR/data/postmaster.pid" ]; then
    log "stopping postgres"
    as_pg "$bin/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null || true
  fi
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

tools_log() { echo "$RUN/log4j2-tools.xml"; }

kafka_ready() {
  if [ "$NODES" = 1 ]; then
    # A real metadata request: TopicCommand lists topics through the broker.
    # shellcheck disable=SC2046 # tool_auth is empty or two words
    timeout 30 java -Xmx256m -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="$(tools_log)" \
      org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" $(tool_auth) --list >/dev/null 2>&1
  else
    # Every broker registered and unfenced: topics with replication factor 3 need all three.
    local n
    n=$(timeout 30 java -Xmx256m -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="$(tools_log)" \
      org.apache.kafka.tools.BrokerApiVersionsCommand --bootstrap-server "$BOOTSTRAP" 2>/dev/null | grep -c '(id: ' || true)
    [ "$n" = "$NODES" ]
  fi
}

registry_ready() {
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$REGISTRY_URL/subjects")" = "200" ]
}

# Secure mode: one random password per principal, made once (with the node's data) and
# kept 0600 under $CREDENTIALS; never printed.
make_credentials() {
  [ -s "$CREDENTIALS/admin.properties" ] && return
  rm -rf "$RUN/secure"
  mkdir -p "$CREDENTIALS"
  chmod 700 "$CREDENTIALS"
  local p pw
  for p in $PRINCIPALS; do
    pw=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    (umask 077; printf 'ERP_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT\nERP_KAFKA_SASL_MECHANISM=SCRAM-SHA-256\nERP_KAFKA_SASL_USERNAME=%s\nERP_KAFKA_SASL_PASSWORD=%s\n' "$p" "$pw" >"$CREDENTIALS/$p.env")
  done
  (umask 077; printf 'security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-256\nsasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="%s";\n' "$(password_of admin)" >"$CREDENTIALS/admin.properties")
  log "credentials of $PRINCIPALS in $CREDENTIALS"
}

password_of() { sed -n 's/^ERP_KAFKA_SASL_PASSWORD=//p' "$CREDENTIALS/$1.env"; }

write_kafka_config() {
  local n=$1 dir port cport quorum rf isr
  dir=$(node_dir "$n"); port=$(node_port "$n"); cport=$(node_controller_port "$n")
  mkdir -p "$dir/data" "$dir/logs"
  if [ "$NODES" = 1 ]; then
    quorum="controller.quorum.bootstrap.servers=127.0.0.1:$cport" rf=1 isr=1
  else
    local voters="" i
    for i in $(seq 1 $NODES); do voters+="$i@127.0.0.1:$(node_controller_port "$i"),"; done
    quorum="controller.quorum.voters=${voters%,}" rf=3 isr=2
  fi
  local listeners
  if [ "$MODE" = secure ]; then
    local admin_pw; admin_pw=$(password_of admin)
    listeners="listeners=SASL_PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=SASL_PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
inter.broker.listener.name=SASL_PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-256
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-256
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"$admin_pw\";
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"admin\" password=\"$admin_pw\" user_admin=\"$admin_pw\";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin
allow.everyone.if.no.acl.found=false"
  else
    listeners="listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT"
  fi
  # Holds the super user's password in secure mode.
  (umask 077; cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=$n
$quorum
$listeners
log.dirs=$dir/data
num.partitions=1
default.replication.factor=$rf
min.insync.replicas=$isr
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
unclean.leader.election.enable=false
group.initial.rebalance.delay.ms=0
transaction.abort.timed.out.transaction.cleanup.interval.ms=2000
transaction.remove.expired.transaction.cleanup.interval.ms=60000
auto.create.topics.enable=false
delete.topic.enable=true
log.retention.hours=-1
EOF
  )
  cat >"$dir/log4j2.xml" <<EOF
<Configuration status="WARN">
  <Appenders>
    <!-- Rolled at 100 MiB, three kept: a broker that lives for days of tests wrote a
         single 640 MB server.log. -->
    <RollingFile name="file" fileName="$dir/logs/server.log" filePattern="$dir/logs/server.log.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <Policies><SizeBasedTriggeringPolicy size="100 MB"/></Policies>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Logger name="kafka" level="INFO"/>
    <Logger name="org.apache.kafka" level="INFO"/>
    <Root level="WARN"><AppenderRef ref="file"/></Root>
  </Loggers>
</Configuration>
EOF
  write_tools_log
}

write_tools_log() {
  mkdir -p "$RUN"
  cat >"$(tools_log)" <<EOF
<Configuration status="OFF">
  <Appenders><Console name="err" target="SYSTEM_ERR"><PatternLayout pattern="%p %m%n"/></Console></Appenders>
  <Loggers><Root level="ERROR"><AppenderRef ref="err"/></Root></Loggers>
</Configuration>
EOF
}

start_node() {
  local n=$1 dir pidf port
  dir=$(node_dir "$n"); pidf=$(node_pid "$n"); port=$(node_port "$n")
  if pid_alive "$pidf"; then
    log "kafka node $n already running (pid $(cat "$pidf"))"
    return
  fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port is taken by a process this script did not start; stop it first"
  fi
  [ "$MODE" = secure ] && make_credentials
  write_kafka_config "$n"
  if [ ! -f "$dir/data/meta.properties" ]; then
    local cluster_id
    if [ "$MODE" = secure ]; then
      # SCRAM credentials go into the metadata log at format time: the broker needs the
      # super user's before it can talk to itself.
      local scram=() p
      for p in $PRINCIPALS; do scram+=(--add-scram "SCRAM-SHA-256=[name=$p,password=$(password_of "$p")]"); done
      cluster_id=$(java -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="$(tools_log)" kafka.tools.StorageTool random-uuid)
      java -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="$(tools_log)" kafka.tools.StorageTool format \
        -t "$cluster_id" -c "$dir/server.properties" --standalone --ignore-formatted "${scram[@]}" >/dev/null
    elif [ "$NODES" = 1 ]; then
      cluster_id=$(java -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="$(tools_log)" kafka.tools.StorageTool random-uuid)
      java -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="$(tools_log)" kafka.tools.StorageTool format \
        -t "$cluster_id" -c "$dir/server.properties" --standalone --ignore-formatted >/dev/null
    else
      # One cluster id for the three nodes; the static voter list needs no bootstrap flag.
      [ -s "$RUN/cluster/cluster-id" ] || java -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="$(tools_log)" \
        kafka.tools.StorageTool random-uuid >"$RUN/cluster/cluster-id"
      cluster_id=$(cat "$RUN/cluster/cluster-id")
      java -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="$(tools_log)" kafka.tools.StorageTool format \
        -t "$cluster_id" -c "$dir/server.properties" --ignore-formatted >/dev/null
    fi
    log "formatted KRaft storage of node $n (cluster $cluster_id)"
  fi
  log "starting kafka $KAFKA_VERSION node $n on 127.0.0.1:$port"
  nohup java -Xms512m -Xmx1g -XX:+UseG1GC \
    -Dlog4j2.configurationFile="$dir/log4j2.xml" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$dir/server.properties" \
    >"$dir/logs/stdout.log" 2>&1 &
  echo $! >"$pidf"
}

any_node_alive() {
  local f
  if [ "$1" = single ]; then pid_alive "$RUN/kafka.pid"; return; fi
  if [ "$1" = secure ]; then pid_alive "$RUN/secure/kafka.pid"; return; fi
  for f in "$RUN"/cluster/kafka-*.pid; do pid_alive "$f" && return 0; done
  return 1
}

start_kafka() {
  if [ -n "$RUNNING_MODE" ] && [ "$RUNNING_MODE" != "$MODE" ] && any_node_alive "$RUNNING_MODE"; then
    die "the stack runs in $RUNNING_MODE mode; run $0 down before starting it in $MODE mode"
  fi
  mkdir -p "$RUN/cluster"
  echo "$MODE" >"$RUN/mode"
  echo "$BOOTSTRAP" >"$RUN/bootstrap"
  local n
  for n in $(seq 1 $NODES); do start_node "$n"; done
  local deadline=$((SECONDS + 180))
  until kafka_ready; do
    for n in $(seq 1 $NODES); do
      pid_alive "$(node_pid "$n")" || die "kafka node $n exited during start-up; see $(node_dir "$n")/logs/"
    done
    ((SECONDS < deadline)) || die "kafka not ready after 180 s; see the logs under $RUN"
    sleep 1
  done
  log "kafka ready ($MODE: $BOOTSTRAP)"
}

stop_kafka() {
  # All nodes at once: stopped one after another, the last one has lost its controller
  # quorum and waits out its controlled shutdown (30 s) before it is killed.
  local n
  for n in $(seq 1 $NODES); do stop_pid "kafka node $n" "$(node_pid "$n")" & done
  wait
  rm -f "$RUN/mode" "$RUN/bootstrap"
}

start_registry() {
  if pid_alive "$RUN/registry.pid"; then
    log "registry already running (pid $(cat "$RUN/registry.pid"))"
  elif registry_ready; then
    die "port $REGISTRY_PORT already answers but not from a registry this script started; stop it first"
  else
    mkdir -p "$RUN/registry"
    log "starting apicurio registry $APICURIO_VERSION on 127.0.0.1:$REGISTRY_PORT (in-memory storage)"
    # Started from this shell (no subshell), so the pid file holds the JVM's own pid and
    # `down` really stops it.
    pushd "$RUN/registry" >/dev/null
    QUARKUS_HTTP_HOST=127.0.0.1 QUARKUS_HTTP_PORT=$REGISTRY_PORT \
      APICURIO_CCOMPAT_USE_CANONICAL_HASH=true QUARKUS_LOG_LEVEL=WARN \
      nohup java -Xms128m -Xmx512m -jar "$APICURIO_HOME/apicurio-registry-app-$APICURIO_VERSION-runner.jar" \
      >"$RUN/registry/stdout.log" 2>&1 &
    echo $! >"$RUN/registry.pid"
    popd >/dev/null
  fi
  local deadline=$((SECONDS + 120))
  until registry_ready; do
    pid_alive "$RUN/registry.pid" || die "registry exited during start-up; see $RUN/registry/stdout.log"
    ((SECONDS < deadline)) || die "registry not ready after 120 s; see $RUN/registry/stdout.log"
    sleep 1
  done
  log "registry ready (HTTP 200 from $REGISTRY_URL/subjects)"
}

stop_pid() {
  local name=$1 file=$2
  if pid_alive "$file"; then
    local pid; pid=$(cat "$file")
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then log "$name ignored SIGTERM for 30 s; killing"; kill -KILL "$pid"; fi
  fi
  rm -f "$file"
}

case "${1:-up}" in
  up)
    install_packages
    fetch_kafka
    fetch_apicurio
    mkdir -p "$RUN"
    start_kafka
    start_registry
    start_postgres
    echo "ERP_BOOTSTRAP_SERVERS=$BOOTSTRAP"
    [ "$MODE" != secure ] || echo "credentials: $CREDENTIALS/<principal>.env (set -a; source …)"
    echo "ERP_SCHEMA_REGISTRY_URL=$REGISTRY_URL"
    echo "ERP_POSTGRES_URL=$PG_URL"
    ;;
  down)
    stop_pid registry "$RUN/registry.pid"
    stop_kafka
    stop_postgres
    ;;
  reset)
    "$0" down
    # The sink's database holds Kafka offsets: it goes with the broker's data.
    rm -rf "$RUN/kafka/data" "$RUN/cluster" "$RUN/secure" "$PG_DIR/data"
    log "broker and database data wiped"
    ;;
  status)
    for n in $(seq 1 $NODES); do
      pid_alive "$(node_pid "$n")" && echo "kafka node $n: running (pid $(cat "$(node_pid "$n")")) on 127.0.0.1:$(node_port "$n") ($MODE)" || echo "kafka node $n: stopped ($MODE)"
    done
    pid_alive "$RUN/registry.pid" && echo "registry: running (pid $(cat "$RUN/registry.pid")) at $REGISTRY_URL" || echo "registry: stopped"
    pg_ready && echo "postgres: running at $PG_URL" || echo "postgres: stopped"
    ;;
  fetch)
    install_packages; fetch_kafka; fetch_apicurio ;;
  psql)
    shift
    bin=$(pg_bin) || die "PostgreSQL is not installed: run $0 up"
    pg_ready || die "postgres is not running on 127.0.0.1:$PG_PORT: run $0 up"
    # The sink's tables live in schema `analytics` (ERP_POSTGRES_SCHEMA) unless told otherwise.
    PGOPTIONS="-c search_path=${ERP_POSTGRES_SCHEMA:-analytics},public" exec "$bin/psql" "$PG_URL" "$@"
    ;;
  broker)
    # Fault injection for bench/chaos: `broker kill` (SIGKILL, no clean shutdown),
    # `broker stop` (SIGTERM, controlled shutdown) and `broker start` (same data, waits
    # until it answers again).
    case "${2:-}" in
      kill)
        n=${3:-1}
        pid_alive "$(node_pid "$n")" || die "kafka node $n is not running"
        pid=$(cat "$(node_pid "$n")")
        kill -KILL "$pid"
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
        log "kafka node $n killed (pid $pid)"
        ;;
      stop)
        # A clean restart's first half: SIGTERM, controlled shutdown.
        n=${3:-1}
        pid_alive "$(node_pid "$n")" || die "kafka node $n is not running"
        stop_pid "kafka node $n" "$(node_pid "$n")"
        ;;
      start)
        fetch_kafka >/dev/null
        start_kafka
        ;;
      *) die "usage: $0 broker kill [N] | stop [N] | start" ;;
    esac
    ;;
  tool)
    # Kafka's own command-line tools from the same jars, e.g.
    #   scripts/stack.sh tool org.apache.kafka.tools.consumer.group.ConsumerGroupCommand --help
    shift
    fetch_kafka >/dev/null
    [ $# -ge 1 ] || die "usage: $0 tool <main class> [args…]"
    [ -f "$(tools_log)" ] || write_tools_log
    logcfg=(-Dlog4j2.configurationFile="$(tools_log)")
    exec java -Xmx256m -cp "$KAFKA_LIBS/*" "${logcfg[@]}" "$@"
    ;;
  acls)
    # One line of AclCommand arguments per grant on stdin (`erp acls`), added as the
    # super user of the secured node.
    [ "$MODE" = secure ] || die "acls: the stack is not in secure mode (ERP_STACK=secure $0 up)"
    fetch_kafka >/dev/null
    [ -f "$(tools_log)" ] || write_tools_log
    count=0
    while read -r line; do
      [ -n "$line" ] || continue
      # shellcheck disable=SC2086 # one grant's arguments, split on purpose
      java -Xmx256m -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="$(tools_log)" \
        org.apache.kafka.tools.AclCommand --bootstrap-server "$BOOTSTRAP" $(tool_auth) $line >/dev/null \
        || die "AclCommand refused: $line"
      count=$((count + 1))
    done
    log "$count grant(s) added"
    ;;
  *) die "usage: $0 up|down|status|reset|fetch|broker kill|stop|start|tool <class> [args]|acls" ;;
esac

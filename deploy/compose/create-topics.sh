#!/bin/sh
# Run by the compose service `kafka-init` (in the apache/kafka image).
# Creates hecht's topics as deploy/topics.yaml lists them; tests/deploy keeps
# the `create` lines below equal to that file. Existing topics are left as they
# are (--if-not-exists): change the config of an existing topic with
#   kafka-configs.sh --alter --entity-type topics --entity-name NAME --add-config KEY=VALUE
set -eu

BOOTSTRAP="${KAFKA_BOOTSTRAP_SERVERS:?KAFKA_BOOTSTRAP_SERVERS is not set}"
REPLICATION_FACTOR=3
MIN_INSYNC_REPLICAS=2

create() {  # name partitions retention.ms cleanup.policy
    /opt/kafka/bin/kafka-topics.sh --bootstrap-server "$BOOTSTRAP" \
        --create --if-not-exists --topic "$1" \
        --partitions "$2" --replication-factor "$REPLICATION_FACTOR" \
        --config "retention.ms=$3" --config "cleanup.policy=$4" \
        --config "min.insync.replicas=$MIN_INSYNC_REPLICAS"
}

create hecht.members 6 2592000000 delete
create hecht.agreements 6 2592000000 delete
create hecht.notify 6 2592000000 delete
# internal, compacted: members' contact records, read by notify only (see deploy/README.md, ACLs)
create hecht.members.contacts 6 2592000000 compact
create hecht.agreements.dlq 3 2592000000 delete
create hecht.notify.dlq 3 2592000000 delete

/opt/kafka/bin/kafka-topics.sh --bootstrap-server "$BOOTSTRAP" --describe --topic 'hecht\..*'

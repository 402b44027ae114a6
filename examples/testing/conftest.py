# A session-wide Kafka: $DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS, or a local node started
# before the test modules (and the broker in tasks.py) are imported.
pytest_plugins = ["dramatiq_kafka.testing"]

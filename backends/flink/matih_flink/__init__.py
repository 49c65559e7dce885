"""matih-flink: drift windows and streaming inference as PyFlink jobs over Kafka (see ``matih_flink.plugin``)."""

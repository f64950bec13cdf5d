/// InfluxSink: placeholder until the sink lands.
